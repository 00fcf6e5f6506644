/* A small training step through the public API, for the tests of what the
 * runtime shows a profiler (tests/test_nvtx.c, tests/test_trace.c): uploads,
 * a forward convolution, a custom task standing in for the loss, both
 * gradient convolutions and downloads, with the labels each task should
 * carry ("conv_fwd 2x16x12x12 * 16x16x3x3 onednn"). */
#ifndef CONVOY_TESTS_PIPELINE_CASE_H
#define CONVOY_TESTS_PIPELINE_CASE_H

#include "convoy.h"

#define PIPELINE_TASKS_PER_STEP 8
#define PIPELINE_STEPS_MAX 4
#define PIPELINE_LABEL_SIZE 128

typedef struct pipeline_run {
    int task_count;
    /* The label of every task submitted, in submission order. */
    char labels[PIPELINE_TASKS_PER_STEP * PIPELINE_STEPS_MAX][PIPELINE_LABEL_SIZE];
} pipeline_run;

/* Runs steps (1..PIPELINE_STEPS_MAX) steps on rt and waits for them; fills
 * *run. Returns CONVOY_OK or the first failure (with its message). */
convoy_status pipeline_run_steps(convoy_runtime *rt, int steps, pipeline_run *run);

#endif /* CONVOY_TESTS_PIPELINE_CASE_H */
