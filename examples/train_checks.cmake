# CTest checks of train_fashion_mnist, run as `cmake -DPROGRAM=... -DCHECK=... -DWORK=dir
# -DDATA=dir -P train_checks.cmake`. Exit 77 (skipped) when the dataset they need is absent.
#   deterministic  a short run (--limit 384) at 0, 2 and 4 streams with --deterministic, twice
#                  at 2 streams: every step's loss must be the same bits in all four runs
#   missing        --data names an empty directory: exit 1, naming the file it could not open
#   truncated      the training images cut short: exit 1, naming the file and the short read
#   garbage        the training images replaced by text: exit 1, naming the file and its magic
cmake_minimum_required(VERSION 3.18)

set(images ${DATA}/train-images-idx3-ubyte.gz)
if(NOT CHECK STREQUAL "missing" AND NOT EXISTS ${images})
  message("skipped: ${images} is not installed (Debian package dataset-fashion-mnist)")
  cmake_language(EXIT 77)
endif()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

# Runs the program; sets out (stdout and stderr) and rc.
function(run_program)
  execute_process(COMMAND ${PROGRAM} ${ARGN} OUTPUT_VARIABLE o ERROR_VARIABLE e
                  RESULT_VARIABLE r)
  set(out "${o}${e}" PARENT_SCOPE)
  set(rc "${r}" PARENT_SCOPE)
endfunction()

function(expect_failure file words)
  run_program(--data ${WORK} --quiet)
  if(NOT rc EQUAL 1)
    message(FATAL_ERROR "expected exit code 1, got '${rc}'; output:\n${out}")
  endif()
  foreach(w ${file} ${words})
    string(FIND "${out}" "${w}" at)
    if(at LESS 0)
      message(FATAL_ERROR "the message does not say '${w}'; output:\n${out}")
    endif()
  endforeach()
  message("ok: ${out}")
endfunction()

# The other three files, so only the one under test is wrong.
function(copy_the_rest)
  foreach(f train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
    file(COPY ${DATA}/${f} DESTINATION ${WORK})
  endforeach()
endfunction()

if(CHECK STREQUAL "deterministic")
  set(runs 0 2 4 2again)
  foreach(run ${runs})
    string(REPLACE "again" "" streams ${run})
    run_program(--data ${DATA} --deterministic --streams ${streams} --epochs 1 --batch 64
                --limit 384 --test-limit 500 --quiet --loss-log ${WORK}/losses_${run}.txt)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "the run at ${streams} streams failed (${rc}):\n${out}")
    endif()
    file(STRINGS ${WORK}/losses_${run}.txt steps REGEX "^step ")
    list(LENGTH steps count)
    if(NOT count EQUAL 6)
      message(FATAL_ERROR "${count} step losses at ${streams} streams, expected 6")
    endif()
    set(steps_${run} "${steps}")
  endforeach()
  foreach(run ${runs})
    if(NOT steps_${run} STREQUAL steps_0)
      message(FATAL_ERROR "losses differ:\n0 streams: ${steps_0}\n${run} streams: "
                          "${steps_${run}}")
    endif()
  endforeach()
  message("ok: the same losses at 0, 2 and 4 streams: ${steps_0}")
elseif(CHECK STREQUAL "missing")
  expect_failure(${WORK}/train-images-idx3-ubyte.gz "cannot open;No such file")
elseif(CHECK STREQUAL "truncated")
  copy_the_rest()
  execute_process(COMMAND head -c 200000 ${images}
                  OUTPUT_FILE ${WORK}/train-images-idx3-ubyte.gz RESULT_VARIABLE r)
  expect_failure(${WORK}/train-images-idx3-ubyte.gz "truncated or corrupt;47040000 bytes of the images expected")
elseif(CHECK STREQUAL "garbage")
  copy_the_rest()
  file(WRITE ${WORK}/train-images-idx3-ubyte.gz "this is not a gzip file of images\n")
  expect_failure(${WORK}/train-images-idx3-ubyte.gz "not an IDX file of images;0x74686973")
else()
  message(FATAL_ERROR "unknown CHECK '${CHECK}'")
endif()
