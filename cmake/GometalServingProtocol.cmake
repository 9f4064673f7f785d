# The inference server's gRPC protocol, compiled by grpcio-tools at build time from
# python/gometal/serving/proto/inference.proto into a descriptor set installed beside it
# (gometal/serving/proto/inference.binpb), so that a server start runs no protoc. A descriptor
# set rather than generated Python: it loads on any protobuf, whatever the build's grpcio-tools.
# Without grpcio-tools in the build's Python (a dev tree configured by hand) nothing is made
# and the server compiles the file when it starts (gometal/serving/grpc_protocol.py).
set(GOMETAL_PROTO_DIR "${CMAKE_CURRENT_LIST_DIR}/../python/gometal/serving/proto")
set(GOMETAL_PROTO_OUT "${CMAKE_CURRENT_BINARY_DIR}/serving_protocol/inference.binpb")
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c "import grpc_tools.protoc"
  RESULT_VARIABLE GOMETAL_GRPC_TOOLS_MISSING OUTPUT_QUIET ERROR_QUIET)
if(GOMETAL_GRPC_TOOLS_MISSING)
  message(STATUS "gometal: grpcio-tools not found: the serving protocol compiles at server start")
else()
  add_custom_command(
    OUTPUT "${GOMETAL_PROTO_OUT}"
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${CMAKE_CURRENT_BINARY_DIR}/serving_protocol"
    COMMAND "${Python_EXECUTABLE}" -m grpc_tools.protoc "-I${GOMETAL_PROTO_DIR}"
            "--descriptor_set_out=${GOMETAL_PROTO_OUT}" inference.proto
    DEPENDS "${GOMETAL_PROTO_DIR}/inference.proto"
    COMMENT "Compiling the serving protocol's inference.proto with grpcio-tools")
  add_custom_target(gometal_serving_protocol ALL DEPENDS "${GOMETAL_PROTO_OUT}")
  install(FILES "${GOMETAL_PROTO_OUT}" DESTINATION serving/proto)
endif()
