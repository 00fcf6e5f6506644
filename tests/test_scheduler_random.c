/* Random task graphs against a sequential model. Each seed makes a program
 * of uploads, downloads and custom read / write / read-write tasks over a
 * few small tensors (some tasks fail on purpose), with tensor destroys,
 * handle releases, waits and synchronizes in between. The program runs on
 * 0, 1, 2, 4 and 8 streams and in a model that executes it one task at a
 * time in submission order with the documented semantics: values, failures
 * poisoning what a task writes, CONVOY_ERR_DEPENDENCY_FAILED for readers of
 * poisoned tensors, recovery when a tensor is written again. Every status
 * the program can observe, every value a task read and every downloaded
 * value must match the model exactly; nothing checked depends on timing.
 *
 * CONVOY_TEST_RANDOM_SEEDS (default 40), CONVOY_TEST_RANDOM_FIRST_SEED
 * (default 1) and CONVOY_TEST_RANDOM_TASKS (default 200) set the soak: a
 * failure prints the seed, the stream count and the first difference. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convoy.h"

#define TENSORS 8
#define MAX_ELEMS 16
#define MAX_ACCESSES 4
#define VALUE_MOD 8191 /* values are integers below this: exact in float */
#define SENTINEL (-1.0f)

typedef enum op_kind {
    OP_UPLOAD,
    OP_DOWNLOAD,
    OP_CUSTOM,
    OP_DESTROY,
    OP_WAIT,
    OP_RELEASE,
    OP_SYNC
} op_kind;

/* What happens to a task's handle: none asked for, released at once, or
 * kept until a wait (its status then checked) or a release op. */
typedef enum handle_mode { HANDLE_NONE, HANDLE_RELEASE, HANDLE_KEEP } handle_mode;

typedef struct op {
    op_kind kind;
    handle_mode handle;
    int slot;     /* upload, download, destroy: the tensor slot */
    int new_size; /* destroy: elements of the tensor created in its place */
    int target;   /* wait, release: the op whose handle it takes */
    int access_count;
    int access_slot[MAX_ACCESSES];
    convoy_access_mode access_mode[MAX_ACCESSES];
    int fail_with; /* custom: 0, or the status its body returns */
    unsigned salt;
    int sleep_us;          /* custom: time spent in the body, to vary interleavings */
    float data[MAX_ELEMS]; /* upload: the values */
} op;

typedef struct program {
    int count;
    op *ops;
    int initial_size[TENSORS];
} program;

/* What one op showed. status: of a task whose handle was kept (-1 when not
 * observed); ran and digest: a custom body ran and what it read; data: a
 * download's host buffer; sync_ok: a synchronize returned CONVOY_OK. */
typedef struct outcome {
    int status;
    int ran;
    uint64_t digest;
    int sync_ok;
    float data[MAX_ELEMS];
} outcome;

/* ---- the seeded generator ------------------------------------------------- */

static uint64_t next_random(uint64_t *state)
{
    /* xorshift64* */
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 2685821657736338717ull;
}

static int below(uint64_t *state, int n)
{
    return (int)((next_random(state) >> 33) % (uint64_t)n);
}

typedef enum slot_state { UNDEFINED, VALID, POISONED } slot_state;

/* Generation tracks only whether each slot was written (reads of a tensor
 * whose contents are undefined are never generated) and which ops hold a
 * handle the program may still wait for. */
static void generate(unsigned seed, int tasks, program *p)
{
    uint64_t state = 0x9e3779b97f4a7c15ull ^ ((uint64_t)seed * 0xbf58476d1ce4e5b9ull);
    for (int i = 0; i < 4; ++i)
        (void)next_random(&state);
    p->ops = calloc((size_t)tasks + TENSORS + 1, sizeof *p->ops);
    assert_non_null(p->ops);
    int written[TENSORS];
    for (int s = 0; s < TENSORS; ++s) {
        p->initial_size[s] = 1 + below(&state, MAX_ELEMS);
        written[s] = 0;
    }
    int *pending = calloc((size_t)tasks, sizeof *pending);
    assert_non_null(pending);
    int pending_count = 0, n = 0;
    while (n < tasks) {
        op *o = &p->ops[n];
        memset(o, 0, sizeof *o);
        o->salt = (unsigned)next_random(&state);
        int r = below(&state, 100);
        int defined[TENSORS], defined_count = 0;
        for (int s = 0; s < TENSORS; ++s) {
            if (written[s])
                defined[defined_count++] = s;
        }
        if (r < 14) {
            o->kind = OP_UPLOAD;
            o->slot = below(&state, TENSORS);
            for (int i = 0; i < MAX_ELEMS; ++i)
                o->data[i] = (float)below(&state, VALUE_MOD);
            written[o->slot] = 1;
        } else if (r < 24 && defined_count > 0) {
            o->kind = OP_DOWNLOAD;
            o->slot = defined[below(&state, defined_count)];
        } else if (r < 28) {
            o->kind = OP_DESTROY;
            o->slot = below(&state, TENSORS);
            o->new_size = 1 + below(&state, MAX_ELEMS);
            written[o->slot] = 0;
        } else if (r < 38 && pending_count > 0) {
            o->kind = OP_WAIT;
        } else if (r < 42 && pending_count > 0) {
            o->kind = OP_RELEASE;
        } else if (r < 44) {
            o->kind = OP_SYNC;
        } else {
            o->kind = OP_CUSTOM;
            int count = below(&state, MAX_ACCESSES + 1);
            int used[TENSORS] = {0};
            for (int a = 0; a < count; ++a) {
                /* Writes without reads are common enough that poison
                 * does not take over every tensor. */
                int pick = below(&state, 20);
                int mode = pick < 7 ? CONVOY_READ : pick < 14 ? CONVOY_WRITE : CONVOY_READ_WRITE;
                int s = -1;
                if (mode & CONVOY_READ) {
                    /* Only a tensor that was written may be read. */
                    int choices[TENSORS], choice_count = 0;
                    for (int d = 0; d < defined_count; ++d) {
                        if (!used[defined[d]])
                            choices[choice_count++] = defined[d];
                    }
                    if (choice_count == 0)
                        mode = CONVOY_WRITE;
                    else
                        s = choices[below(&state, choice_count)];
                }
                if (s < 0) {
                    int choices[TENSORS], choice_count = 0;
                    for (int t = 0; t < TENSORS; ++t) {
                        if (!used[t])
                            choices[choice_count++] = t;
                    }
                    s = choices[below(&state, choice_count)];
                }
                used[s] = 1;
                o->access_slot[o->access_count] = s;
                o->access_mode[o->access_count++] = (convoy_access_mode)mode;
            }
            for (int a = 0; a < o->access_count; ++a) {
                if (o->access_mode[a] & CONVOY_WRITE)
                    written[o->access_slot[a]] = 1;
            }
            static const int failures[4] = {CONVOY_ERR_TASK_FAILED, CONVOY_ERR_OUT_OF_MEMORY,
                                            CONVOY_ERR_BACKEND, 1234};
            if (below(&state, 100) < 4)
                o->fail_with = failures[below(&state, 4)];
            if (below(&state, 100) < 10)
                o->sleep_us = 20 + below(&state, 200);
        }
        if (o->kind == OP_WAIT || o->kind == OP_RELEASE) {
            int k = below(&state, pending_count);
            o->target = pending[k];
            pending[k] = pending[--pending_count];
        }
        if (o->kind == OP_UPLOAD || o->kind == OP_DOWNLOAD || o->kind == OP_CUSTOM) {
            int h = below(&state, 4);
            o->handle = h < 2 ? HANDLE_KEEP : h == 2 ? HANDLE_RELEASE : HANDLE_NONE;
            if (o->handle == HANDLE_KEEP)
                pending[pending_count++] = n;
        }
        ++n;
    }
    /* Finally every tensor that was written is downloaded, and a synchronize
     * waits for everything (the task bodies' records are read after it). */
    for (int s = 0; s < TENSORS; ++s) {
        if (!written[s])
            continue;
        op *o = &p->ops[n++];
        memset(o, 0, sizeof *o);
        o->kind = OP_DOWNLOAD;
        o->slot = s;
        o->handle = HANDLE_KEEP;
    }
    memset(&p->ops[n], 0, sizeof p->ops[n]);
    p->ops[n++].kind = OP_SYNC;
    p->count = n;
    free(pending);
}

/* ---- the task body, shared by the runtime and the model -------------------- */

/* Digests every element read, then rewrites every element written from the
 * digest (and, for read-write, the old value). A failing body scribbles on
 * what it writes first: poisoning must hide that. */
static uint64_t run_body(const op *o, float *const *data, const int *sizes)
{
    uint64_t h = 1469598103934665603ull ^ o->salt;
    for (int a = 0; a < o->access_count; ++a) {
        if (!(o->access_mode[a] & CONVOY_READ))
            continue;
        for (int i = 0; i < sizes[a]; ++i)
            h = (h ^ (uint64_t)(int)data[a][i]) * 1099511628211ull;
    }
    for (int a = 0; a < o->access_count; ++a) {
        if (!(o->access_mode[a] & CONVOY_WRITE))
            continue;
        for (int i = 0; i < sizes[a]; ++i) {
            uint64_t old = o->access_mode[a] & CONVOY_READ ? (uint64_t)(int)data[a][i] : 0;
            data[a][i] = o->fail_with
                             ? 9999.0f
                             : (float)((h + 31u * (uint64_t)i + 7u * old + o->salt) % VALUE_MOD);
        }
    }
    return h;
}

typedef struct body_record {
    const op *op;
    int ran;
    uint64_t digest;
} body_record;

static convoy_status random_body(const convoy_task_context *ctx, void *user_data)
{
    body_record *r = user_data;
    int sizes[MAX_ACCESSES];
    for (size_t a = 0; a < ctx->count; ++a)
        sizes[a] = (int)convoy_tensor_dim(ctx->accesses[a].tensor, 0);
    if (r->op->sleep_us)
        usleep((useconds_t)r->op->sleep_us);
    r->digest = run_body(r->op, ctx->data, sizes);
    r->ran = 1;
    return (convoy_status)r->op->fail_with;
}

/* ---- the sequential model -------------------------------------------------- */

/* The status a custom task ends with when its body returns fail_with. */
static int custom_status(int fail_with)
{
    return fail_with == 1234 ? CONVOY_ERR_TASK_FAILED : fail_with;
}

static void run_model(const program *p, outcome *out)
{
    int size[TENSORS];
    slot_state state[TENSORS];
    float values[TENSORS][MAX_ELEMS];
    for (int s = 0; s < TENSORS; ++s) {
        size[s] = p->initial_size[s];
        state[s] = UNDEFINED;
    }
    int failed_since_sync = 0;
    for (int n = 0; n < p->count; ++n) {
        const op *o = &p->ops[n];
        outcome *r = &out[n];
        r->status = -1;
        for (int i = 0; i < MAX_ELEMS; ++i)
            r->data[i] = SENTINEL;
        switch (o->kind) {
        case OP_UPLOAD:
            memcpy(values[o->slot], o->data, sizeof values[o->slot]);
            state[o->slot] = VALID;
            r->status = CONVOY_OK;
            break;
        case OP_DOWNLOAD:
            assert_int_not_equal(state[o->slot], UNDEFINED);
            if (state[o->slot] == POISONED) {
                r->status = CONVOY_ERR_DEPENDENCY_FAILED;
            } else {
                memcpy(r->data, values[o->slot], (size_t)size[o->slot] * sizeof(float));
                r->status = CONVOY_OK;
            }
            break;
        case OP_CUSTOM: {
            int poisoned = 0;
            for (int a = 0; a < o->access_count; ++a) {
                int s = o->access_slot[a];
                if (o->access_mode[a] & CONVOY_READ) {
                    assert_int_not_equal(state[s], UNDEFINED);
                    poisoned |= state[s] == POISONED;
                }
            }
            if (poisoned) {
                r->status = CONVOY_ERR_DEPENDENCY_FAILED;
            } else {
                float *data[MAX_ACCESSES];
                int sizes[MAX_ACCESSES];
                for (int a = 0; a < o->access_count; ++a) {
                    data[a] = values[o->access_slot[a]];
                    sizes[a] = size[o->access_slot[a]];
                }
                r->digest = run_body(o, data, sizes);
                r->ran = 1;
                r->status = custom_status(o->fail_with);
            }
            for (int a = 0; a < o->access_count; ++a) {
                if (o->access_mode[a] & CONVOY_WRITE)
                    state[o->access_slot[a]] = r->status == CONVOY_OK ? VALID : POISONED;
            }
            break;
        }
        case OP_DESTROY:
            size[o->slot] = o->new_size;
            state[o->slot] = UNDEFINED;
            break;
        case OP_SYNC:
            r->sync_ok = !failed_since_sync;
            failed_since_sync = 0;
            break;
        case OP_WAIT:
        case OP_RELEASE:
            break;
        }
        if (r->status > 0)
            failed_since_sync = 1;
    }
    /* Only statuses the program observes through a kept, waited handle are
     * compared; the others stay -1 on both sides. */
    for (int n = 0; n < p->count; ++n) {
        const op *o = &p->ops[n];
        if (o->kind == OP_RELEASE)
            out[o->target].status = -1;
        if (o->handle != HANDLE_KEEP && o->kind != OP_WAIT && o->kind != OP_RELEASE &&
            o->kind != OP_SYNC && o->kind != OP_DESTROY)
            out[n].status = -1;
    }
}

/* ---- the runtime ------------------------------------------------------------ */

static convoy_tensor *make_tensor(convoy_runtime *rt, int size)
{
    int64_t dims[1] = {size};
    convoy_tensor *t = NULL;
    assert_int_equal(convoy_tensor_create(rt, 1, dims, &t), CONVOY_OK);
    return t;
}

static void run_runtime(const program *p, int streams, outcome *out)
{
    convoy_options o;
    assert_int_equal(convoy_options_init(&o), CONVOY_OK);
    o.device = CONVOY_DEVICE_CPU;
    o.streams = streams;
    convoy_runtime *rt = NULL;
    assert_int_equal(convoy_runtime_create(&o, &rt), CONVOY_OK);
    convoy_tensor *t[TENSORS];
    for (int s = 0; s < TENSORS; ++s)
        t[s] = make_tensor(rt, p->initial_size[s]);
    convoy_task **handles = calloc((size_t)p->count, sizeof *handles);
    body_record *records = calloc((size_t)p->count, sizeof *records);
    assert_non_null(handles);
    assert_non_null(records);
    for (int n = 0; n < p->count; ++n) {
        const op *op = &p->ops[n];
        outcome *r = &out[n];
        r->status = -1;
        for (int i = 0; i < MAX_ELEMS; ++i)
            r->data[i] = SENTINEL;
        convoy_task **handle = op->handle == HANDLE_NONE ? NULL : &handles[n];
        switch (op->kind) {
        case OP_UPLOAD:
            assert_int_equal(convoy_upload(rt, t[op->slot], op->data,
                                           (size_t)convoy_tensor_dim(t[op->slot], 0), handle),
                             CONVOY_OK);
            break;
        case OP_DOWNLOAD:
            assert_int_equal(convoy_download(rt, t[op->slot], r->data,
                                             (size_t)convoy_tensor_dim(t[op->slot], 0), handle),
                             CONVOY_OK);
            break;
        case OP_CUSTOM: {
            convoy_access accesses[MAX_ACCESSES];
            for (int a = 0; a < op->access_count; ++a)
                accesses[a] = (convoy_access){t[op->access_slot[a]], op->access_mode[a]};
            records[n].op = op;
            assert_int_equal(convoy_submit(rt, random_body, &records[n], accesses,
                                           (size_t)op->access_count, "random", handle),
                             CONVOY_OK);
            break;
        }
        case OP_DESTROY:
            convoy_tensor_destroy(t[op->slot]);
            t[op->slot] = make_tensor(rt, op->new_size);
            break;
        case OP_WAIT:
            out[op->target].status = convoy_task_wait(handles[op->target]);
            convoy_task_release(handles[op->target]);
            handles[op->target] = NULL;
            break;
        case OP_RELEASE:
            convoy_task_release(handles[op->target]);
            handles[op->target] = NULL;
            break;
        case OP_SYNC:
            r->sync_ok = convoy_runtime_synchronize(rt) == CONVOY_OK;
            break;
        }
        if (op->handle == HANDLE_RELEASE) {
            convoy_task_release(handles[n]);
            handles[n] = NULL;
        }
    }
    for (int n = 0; n < p->count; ++n) {
        if (handles[n]) {
            out[n].status = convoy_task_wait(handles[n]);
            convoy_task_release(handles[n]);
        }
    }
    for (int n = 0; n < p->count; ++n) {
        out[n].ran = records[n].ran;
        out[n].digest = records[n].digest;
    }
    convoy_runtime_destroy(rt);
    /* The handles still held are detached now: destroying them frees them. */
    for (int s = 0; s < TENSORS; ++s)
        convoy_tensor_destroy(t[s]);
    free(handles);
    free(records);
}

/* ---- comparison ------------------------------------------------------------- */

static const char *kind_name(op_kind kind)
{
    static const char *const names[] = {"upload", "download", "custom",     "destroy",
                                        "wait",   "release",  "synchronize"};
    return names[kind];
}

/* 1 when equal; otherwise prints the first difference and returns 0. */
static int same(const program *p, const outcome *expected, const outcome *got, unsigned seed,
                int streams)
{
    for (int n = 0; n < p->count; ++n) {
        const op *o = &p->ops[n];
        const outcome *e = &expected[n], *g = &got[n];
        const char *what = NULL;
        if (e->status != g->status)
            what = "status";
        else if (e->ran != g->ran)
            what = "whether the body ran";
        else if (e->ran && e->digest != g->digest)
            what = "the values the body read";
        else if (o->kind == OP_SYNC && e->sync_ok != g->sync_ok)
            what = "the synchronize result";
        else if (memcmp(e->data, g->data, sizeof e->data) != 0)
            what = "the downloaded values";
        if (what) {
            print_error("seed %u, %d streams: op %d (%s) differs from the model in %s "
                        "(model status %d, got %d; ran %d/%d)\n",
                        seed, streams, n, kind_name(o->kind), what, e->status, g->status, e->ran,
                        g->ran);
            return 0;
        }
    }
    return 1;
}

static int env_int(const char *name, int fallback)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end = NULL;
    long value = strtol(v, &end, 10);
    return end && *end == '\0' && value > 0 && value < 100000000 ? (int)value : fallback;
}

static void test_random_graphs_match_the_model(void **state)
{
    const int seeds = env_int("CONVOY_TEST_RANDOM_SEEDS", 40);
    const int first = env_int("CONVOY_TEST_RANDOM_FIRST_SEED", 1);
    const int tasks = env_int("CONVOY_TEST_RANDOM_TASKS", 200);
    const int stream_counts[5] = {0, 1, 2, 4, 8};
    int failures = 0;
    for (int k = 0; k < seeds; ++k) {
        unsigned seed = (unsigned)(first + k);
        program p = {0, NULL, {0}};
        generate(seed, tasks, &p);
        outcome *expected = calloc((size_t)p.count, sizeof *expected);
        outcome *got = calloc((size_t)p.count, sizeof *got);
        assert_non_null(expected);
        assert_non_null(got);
        run_model(&p, expected);
        for (int i = 0; i < 5; ++i) {
            memset(got, 0, (size_t)p.count * sizeof *got);
            run_runtime(&p, stream_counts[i], got);
            failures += !same(&p, expected, got, seed, stream_counts[i]);
        }
        free(expected);
        free(got);
        free(p.ops);
    }
    if (failures)
        fail_msg("%d runs differ from the sequential model", failures);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_graphs_match_the_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
