# mcim_library(NAME SOURCES ... DEPS ...): one static library per src/ folder (STYLE.md §10).
function(mcim_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(mcim_${name} STATIC ${ARG_SOURCES})
  target_include_directories(mcim_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(mcim_${name} PUBLIC ${ARG_DEPS})
endfunction()

# mcim_test(NAME SOURCES ... DEPS ... LABEL l): one executable per *_test.cpp, tests discovered by ctest.
function(mcim_test name)
  cmake_parse_arguments(ARG "" "LABEL" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE MCIM_BINARY_DIR="${PROJECT_BINARY_DIR}")
  gtest_discover_tests(${name} PROPERTIES LABELS "${ARG_LABEL}" DISCOVERY_TIMEOUT 60)
endfunction()
