/* The wire schema version this build speaks; bumped with every incompatible change to
 * lion.proto. Lives here so that the generated code's library is never empty. */
const int lion_proto_schema_version = 2; /* 2: PARTIAL, CANCEL, Task.stream, finish_reason */
