/*
 * sinks: the built-in sink types, one SINK(name) line each, in the order
 * `session-bridge sinks` lists them. Adding a sink is its <name>.c (which
 * defines sink_<name>_type) and one line here: sink.h declares every
 * sink_<name>_type from this list, sink.c builds the registry from it, and
 * sinks/CMakeLists.txt compiles <name>.c for every line.
 *
 * No include guard: it is included once per use, with SINK defined to
 * what that use needs.
 */
SINK(kafka)
SINK(stdout)
SINK(webhook)
SINK(file)
SINK(redis_stream)
