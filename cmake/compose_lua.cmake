cmake_minimum_required(VERSION 3.20)  # IN_LIST in if()
# Writes OUT_DIR/<name>.lua for each file in SCRIPTS (the top-level lua/*.lua): the lua/lib files
# the script declares it needs, then the script. A script (or a library) declares them on lines
# of the form
#   -- requires: lib/int64.lua lib/validate.lua
# (paths relative to lua/); a library's own requirements come before it, each file once, each
# followed by a newline when it lacks one. Redis compiles the whole body on every call, so a
# script carries only what it uses; embed_lua.cmake then embeds the composed files.
function(lua_requires file out_var)
  file(STRINGS ${file} lines REGEX "^-- requires:")
  set(reqs "")
  foreach(line ${lines})
    string(REGEX REPLACE "^-- requires:[ \t]*" "" line "${line}")
    string(REGEX MATCHALL "[^ \t]+" names "${line}")
    list(APPEND reqs ${names})
  endforeach()
  set(${out_var} ${reqs} PARENT_SCOPE)
endfunction()

# Appends to `order` (in the caller's scope) the libraries `file` needs, dependencies first.
function(lua_collect file)
  lua_requires(${file} reqs)
  foreach(req ${reqs})
    set(path ${LUA_DIR}/${req})
    if(NOT EXISTS ${path})
      message(FATAL_ERROR "${file}: required ${req} not found in ${LUA_DIR}")
    endif()
    if(NOT path IN_LIST order)
      lua_collect(${path})
      list(APPEND order ${path})
    endif()
  endforeach()
  set(order ${order} PARENT_SCOPE)
endfunction()

foreach(f ${SCRIPTS})
  get_filename_component(name ${f} NAME)
  set(order "")
  lua_collect(${f})
  set(body "")
  foreach(lib ${order})
    file(READ ${lib} lib_content)
    string(APPEND body "${lib_content}")
    if(NOT lib_content MATCHES "\n$")
      string(APPEND body "\n")
    endif()
  endforeach()
  file(READ ${f} content)
  string(APPEND body "${content}")
  file(WRITE ${OUT_DIR}/${name} "${body}")
endforeach()
