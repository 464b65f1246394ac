# Flags for llmds' own targets. They are set per target, never globally, so a project that embeds
# llmds with add_subdirectory keeps its own flags.

# Warnings for code llmds owns (the library, its tests and benchmarks; not third-party headers).
function(llmds_target_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor)
    if(LLMDS_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  elseif(MSVC)
    target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${LLMDS_WERROR}>:/WX>)
  endif()
endfunction()

# AddressSanitizer + UndefinedBehaviorSanitizer when LLMDS_SANITIZE is on. The flags travel with
# the target inside the build tree only (BUILD_INTERFACE), so every test that links llmds is
# instrumented, but an installed llmds never imposes them on its users.
#
# ThreadSanitizer instead when LLMDS_SANITIZE_THREAD is on (the two cannot share a build). The
# Python extension inherits the flags through llmds; Python itself is not instrumented, so the
# tests preload libtsan (cmake/quickstart.sh tsan).
function(llmds_target_sanitizers target)
  if(LLMDS_SANITIZE AND LLMDS_SANITIZE_THREAD)
    message(FATAL_ERROR "LLMDS_SANITIZE and LLMDS_SANITIZE_THREAD cannot be on in one build")
  endif()
  if(LLMDS_SANITIZE)
    set(_compile -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
    set(_link -fsanitize=address,undefined)
  elseif(LLMDS_SANITIZE_THREAD)
    set(_compile -fsanitize=thread -fno-omit-frame-pointer)
    set(_link -fsanitize=thread)
  else()
    return()
  endif()
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    message(FATAL_ERROR "the sanitizers need GCC or Clang")
  endif()
  target_compile_options(${target} PUBLIC $<BUILD_INTERFACE:${_compile}>)
  target_link_options(${target} PUBLIC $<BUILD_INTERFACE:${_link}>)
endfunction()
