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

# mcim_pg_test(NAME SOURCES ... DEPS ... LABEL l): like mcim_test, for tests parameterised over
# databases: the cases whose name has "postgresql" use the store tests' shared throwaway server
# (fixture store_pg, tests/store/pg_server.h).
function(mcim_pg_test name)
  cmake_parse_arguments(T "" "LABEL" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${T_SOURCES} ${PROJECT_SOURCE_DIR}/tests/store/pg_server.cpp)
  target_link_libraries(${name} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE MCIM_BINARY_DIR="${PROJECT_BINARY_DIR}")
  gtest_discover_tests(${name} TEST_FILTER "-*postgresql*"
    PROPERTIES LABELS ${T_LABEL} DISCOVERY_TIMEOUT 60)
  gtest_discover_tests(${name} TEST_FILTER "*postgresql*"
    PROPERTIES LABELS ${T_LABEL} FIXTURES_REQUIRED store_pg
               ENVIRONMENT "MCIM_TEST_PG_SERVER=${PROJECT_BINARY_DIR}/tests/store/pg-server.txt"
    DISCOVERY_TIMEOUT 60)
  add_dependencies(${name} pg_server_ctl)
endfunction()
