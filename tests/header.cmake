# The public headers compile as strict C99 and as C++, without CUDA headers.
# These are build checks: a header that needs more fails the build.
add_library(convoy_header_c99 OBJECT header_c99.c)
set_target_properties(convoy_header_c99 PROPERTIES C_STANDARD 99 C_EXTENSIONS OFF)
target_compile_options(convoy_header_c99 PRIVATE -pedantic-errors)
target_include_directories(convoy_header_c99 PRIVATE ${PROJECT_SOURCE_DIR}/include)

include(CheckLanguage)
check_language(CXX)
if(CMAKE_CXX_COMPILER)
  enable_language(CXX)
  add_library(convoy_header_cxx OBJECT header_cxx.cpp)
  target_compile_options(convoy_header_cxx PRIVATE -Wall -Wextra -Werror -pedantic-errors)
  target_include_directories(convoy_header_cxx PRIVATE ${PROJECT_SOURCE_DIR}/include)
endif()
