/*
 * The built-in providers, one PROVIDER(name) line each, in the order
 * `provider_all` lists them: name is the adapter's file (name.c) and its
 * ops (provider_<name>). provider.h declares the ops from this list,
 * provider.c's registry lists them from it and bridge/CMakeLists.txt builds
 * name.c from it, so that a new adapter is its file and one line here.
 *
 * No include guard: it is read once per expansion, with PROVIDER defined
 * by the includer.
 */
PROVIDER(century)
PROVIDER(quiz_jsonapi)
PROVIDER(proctorexam)
PROVIDER(smarterproctoring)
PROVIDER(rest)
