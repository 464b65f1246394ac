# Installs the llmds build in LLMDS_BUILD_DIR into a scratch prefix, then configures, builds and
# runs the consumer project against that prefix only. Run by ctest (consumer_find_package).
#
# Besides main.cpp, the consumer builds and runs every complete C++ program of the docs: each
# ```cpp block of README.md or docs/*.md that contains `int main` is written to
# WORK_DIR/doc_programs/<doc>_<n>.cpp (readme_1.cpp, engine_1.cpp, ...; n counts the programs of
# that doc) and becomes its own executable linked to llmds::llmds. A #line directive points
# compiler messages at the doc's own lines. Blocks without main are fragments and are left out.
# Finding no program at all, or none in README.md, fails the check.
#
# Programs that open a data file listed in doc_data_files below (found by its file name in the
# block, e.g. "stories260K.bin") run in a scratch folder holding links to those files, taken
# from LLMDS_DATA_DIR (default: the shared data folder beside the source tree), so that the
# relative names in the docs resolve as they would for a reader running the example next to the
# files. If a file is absent the program is built but not run; with LLMDS_REQUIRE_DATA=1 (CI)
# that is a failure instead.
cmake_minimum_required(VERSION 3.24)

foreach(var LLMDS_BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR CMAKE_GENERATOR CMAKE_CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_install.cmake needs -D${var}=...")
  endif()
endforeach()
# The source tree whose docs are checked: this script's project unless given.
if(NOT DEFINED LLMDS_SOURCE_DIR)
  get_filename_component(LLMDS_SOURCE_DIR "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
endif()

# Data files the docs' programs may open, relative to the data folder.
set(doc_data_files models/stories260K.bin models/tok512.bin)
# Upper bound for one doc program's run, in seconds.
set(doc_program_timeout 120)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE code)
  if(NOT code EQUAL 0)
    string(REPLACE ";" " " shown "${ARGN}")
    message(FATAL_ERROR "failed (${code}): ${shown}")
  endif()
endfunction()

# --- Extract the docs' complete programs -------------------------------------------------------
# Parallel lists, one entry per program: target name, doc (relative path), ordinal in the doc,
# line of the opening fence.
set(program_names)
set(program_docs)
set(program_ordinals)
set(program_lines)
set(programs_dir ${WORK_DIR}/doc_programs)

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${programs_dir})

file(GLOB doc_pages RELATIVE ${LLMDS_SOURCE_DIR} ${LLMDS_SOURCE_DIR}/docs/*.md)
set(docs README.md ${doc_pages})
foreach(doc IN LISTS docs)
  if(NOT EXISTS ${LLMDS_SOURCE_DIR}/${doc})
    message(FATAL_ERROR "doc programs: ${LLMDS_SOURCE_DIR}/${doc} does not exist")
  endif()
  get_filename_component(stem ${doc} NAME_WE)
  string(TOLOWER "${stem}" stem)
  string(REGEX REPLACE "[^a-z0-9]" "_" stem "${stem}")
  if(stem IN_LIST seen_stems)
    message(FATAL_ERROR "doc programs: two docs are both named '${stem}' (${doc}); rename one")
  endif()
  list(APPEND seen_stems ${stem})

  # Walk the doc line by line (no CMake lists: code holds ';', '[' and '\'), tracking fences
  # as CommonMark does: an opening ``` or ~~~ run, closed by a run of the same character at
  # least as long with nothing after it.
  file(READ ${LLMDS_SOURCE_DIR}/${doc} rest)
  string(APPEND rest "\n")
  set(line_no 0)
  set(fence "")
  set(programs 0)
  set(fragments 0)
  while(NOT rest STREQUAL "")
    string(FIND "${rest}" "\n" nl)
    string(SUBSTRING "${rest}" 0 ${nl} line)
    math(EXPR nl "${nl} + 1")
    string(SUBSTRING "${rest}" ${nl} -1 rest)
    math(EXPR line_no "${line_no} + 1")
    string(REGEX REPLACE "\r$" "" line "${line}")

    if(fence STREQUAL "")
      if(line MATCHES "^( *)(```+|~~~+)[ \t]*([^ \t`]*)")
        set(indent "${CMAKE_MATCH_1}")
        set(fence "${CMAKE_MATCH_2}")
        string(SUBSTRING "${fence}" 0 1 fence_char)
        string(TOLOWER "${CMAKE_MATCH_3}" info)
        set(fence_line ${line_no})
        set(body "")
      endif()
    elseif(line MATCHES "^ *${fence}${fence_char}*[ \t]*$")
      if(info STREQUAL "cpp" OR info STREQUAL "c++")
        if(body MATCHES "int[ \t\n]+main[ \t]*\\(")
          math(EXPR programs "${programs} + 1")
          set(name ${stem}_${programs})
          math(EXPR first_line "${fence_line} + 1")
          file(WRITE ${programs_dir}/${name}.cpp
            "// ${doc}, C++ block ${programs} (line ${fence_line}), extracted by "
            "tests/consumer/check_install.cmake.\n#line ${first_line} \"${doc}\"\n${body}")
          list(APPEND program_names ${name})
          list(APPEND program_docs ${doc})
          list(APPEND program_ordinals ${programs})
          list(APPEND program_lines ${fence_line})
        else()
          math(EXPR fragments "${fragments} + 1")
        endif()
      endif()
      set(fence "")
    else()
      # Content lines lose up to the opening fence's indentation.
      string(LENGTH "${indent}" n)
      while(n GREATER 0 AND line MATCHES "^ ")
        string(SUBSTRING "${line}" 1 -1 line)
        math(EXPR n "${n} - 1")
      endwhile()
      string(APPEND body "${line}\n")
    endif()
  endwhile()
  if(NOT fence STREQUAL "")
    message(FATAL_ERROR "doc programs: ${doc} line ${fence_line}: a ${fence} block is never closed")
  endif()
  if(programs GREATER 0 OR fragments GREATER 0)
    message(STATUS "doc programs: ${doc}: ${programs} complete program(s), "
                   "${fragments} fragment(s) without main (not compiled)")
  endif()
endforeach()

list(LENGTH program_names program_count)
if(program_count EQUAL 0)
  message(FATAL_ERROR "doc programs: no ```cpp block containing `int main` was found in "
                      "README.md or docs/*.md under ${LLMDS_SOURCE_DIR}; the extraction is broken "
                      "or the docs lost their examples")
endif()
if(NOT "README.md" IN_LIST program_docs)
  message(FATAL_ERROR "doc programs: README.md has no complete C++ program (a ```cpp block with "
                      "`int main`); its C++ example must be one")
endif()

# --- Install, configure, build ------------------------------------------------------------------
set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
run(${CMAKE_COMMAND} --install ${LLMDS_BUILD_DIR} --prefix ${prefix})
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${build} -G ${CMAKE_GENERATOR}
    -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DLLMDS_DOC_PROGRAMS_DIR=${programs_dir})
run(${CMAKE_COMMAND} --build ${build} --target consumer)
run(${build}/consumer)

# Each doc program is built on its own, so that a failure names its doc and block and the
# others are still built and run.
set(failures "")
if(DEFINED ENV{LLMDS_DATA_DIR} AND NOT "$ENV{LLMDS_DATA_DIR}" STREQUAL "")
  set(data_dir "$ENV{LLMDS_DATA_DIR}")
else()
  get_filename_component(data_dir "${LLMDS_SOURCE_DIR}/../shared/data" ABSOLUTE)
endif()
set(require_data FALSE)
if("$ENV{LLMDS_REQUIRE_DATA}" STREQUAL "1")
  set(require_data TRUE)
endif()
set(not_run 0)

math(EXPR last "${program_count} - 1")
foreach(i RANGE ${last})
  list(GET program_names ${i} name)
  list(GET program_docs ${i} doc)
  list(GET program_ordinals ${i} ordinal)
  list(GET program_lines ${i} fence_line)
  set(what "${doc}, C++ block ${ordinal} (line ${fence_line}, ${name})")

  message(STATUS "doc program ${what}: building")
  execute_process(COMMAND ${CMAKE_COMMAND} --build ${build} --target ${name} RESULT_VARIABLE code)
  if(NOT code EQUAL 0)
    string(APPEND failures "\n  ${what}: does not build")
    continue()
  endif()

  # Data files the program names, and which of them are missing.
  set(needed "")
  set(missing "")
  file(READ ${programs_dir}/${name}.cpp source)
  foreach(data_file IN LISTS doc_data_files)
    get_filename_component(data_name ${data_file} NAME)
    string(FIND "${source}" "${data_name}" at)
    if(NOT at EQUAL -1)
      list(APPEND needed ${data_file})
      if(NOT EXISTS "${data_dir}/${data_file}")
        list(APPEND missing ${data_file})
      endif()
    endif()
  endforeach()
  if(missing)
    string(REPLACE ";" ", " missing "${missing}")
    if(require_data)
      string(APPEND failures "\n  ${what}: needs ${missing} under LLMDS_DATA_DIR=${data_dir}, "
                             "which is absent, and LLMDS_REQUIRE_DATA=1")
    else()
      message(STATUS "doc program ${what}: built but NOT RUN: needs ${missing} under "
                     "${data_dir} (set LLMDS_DATA_DIR to the shared data folder)")
      math(EXPR not_run "${not_run} + 1")
    endif()
    continue()
  endif()

  set(run_dir ${WORK_DIR}/run/${name})
  file(MAKE_DIRECTORY ${run_dir})
  foreach(data_file IN LISTS needed)
    get_filename_component(data_name ${data_file} NAME)
    file(CREATE_LINK "${data_dir}/${data_file}" ${run_dir}/${data_name} SYMBOLIC COPY_ON_ERROR)
  endforeach()
  if(needed)
    string(REPLACE ";" ", " shown "${needed}")
    message(STATUS "doc program ${what}: running in ${run_dir} (links to ${shown} in ${data_dir})")
  else()
    message(STATUS "doc program ${what}: running")
  endif()
  execute_process(COMMAND ${build}/${name} WORKING_DIRECTORY ${run_dir}
                  TIMEOUT ${doc_program_timeout} RESULT_VARIABLE code)
  if(NOT code EQUAL 0)
    string(APPEND failures "\n  ${what}: exited with ${code}")
  endif()
endforeach()

if(NOT failures STREQUAL "")
  message(FATAL_ERROR "doc programs that failed:${failures}")
endif()
math(EXPR ran "${program_count} - ${not_run}")
message(STATUS "doc programs: ${program_count} built, ${ran} ran successfully, ${not_run} not run")
