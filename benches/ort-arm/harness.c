/* A tiny onnxruntime driver for instruction counts (benches/ort-arm.sh, issue 28 part 2).
 *
 *   ort-harness MODEL INPUT OUTPUT HEIGHT WIDTH N
 *
 * Loads MODEL with onnxruntime's C API (one intra-op and one inter-op thread, all graph
 * optimizations, as benches/compare_ort.py configures the Python API), then runs it N times on
 * one fixed [1, 3, HEIGHT, WIDTH] f32 input: the pseudo-random pattern `edgeclip bench` feeds
 * tract (src/bench.rs, test_pattern), so both runtimes see the same numbers. Prints the first
 * output values. Run it with N=1 and N=3: the difference over 2 is one inference, without the
 * load and the first run's set-up.
 *
 * No onnxruntime header is needed: the few OrtApi entries used are declared here by their
 * position in the OrtApi table of onnxruntime_c_api.h, which onnxruntime only ever appends to
 * (so positions hold for every version since they were added; checked against the header of
 * API version 14 and run against onnxruntime 1.32.0). Each is marked with its index.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef void *Status; /* OrtStatus*: NULL on success */
typedef Status (*fn_create_env)(int level, const char *logid, void **env);
typedef Status (*fn_create_session)(const void *env, const char *path, const void *opts, void **session);
typedef Status (*fn_run)(void *session, const void *run_opts, const char *const *in_names,
                         const void *const *inputs, size_t n_in, const char *const *out_names,
                         size_t n_out, void **outputs);
typedef Status (*fn_create_options)(void **opts);
typedef Status (*fn_set_int)(void *opts, int value);
typedef Status (*fn_cpu_memory_info)(int allocator_type, int mem_type, void **info);
typedef Status (*fn_tensor_with_data)(const void *info, void *data, size_t bytes, const int64_t *shape,
                                      size_t rank, int type, void **value);
typedef Status (*fn_mutable_data)(void *value, void **data);
typedef const char *(*fn_error_message)(const Status status);
typedef void (*fn_release)(void *value);

enum {
  GET_ERROR_MESSAGE = 2,
  CREATE_ENV = 3,
  CREATE_SESSION = 7,
  RUN = 9,
  CREATE_SESSION_OPTIONS = 10,
  SET_GRAPH_OPTIMIZATION_LEVEL = 23,
  SET_INTRA_OP_THREADS = 24,
  SET_INTER_OP_THREADS = 25,
  CREATE_TENSOR_WITH_DATA = 49,
  GET_TENSOR_MUTABLE_DATA = 51,
  CREATE_CPU_MEMORY_INFO = 69,
  RELEASE_VALUE = 96,
};

typedef struct {
  void *const *(*get_api)(uint32_t version); /* const OrtApi*: a table of function pointers */
  const char *(*get_version_string)(void);
} OrtApiBase;
extern const OrtApiBase *OrtGetApiBase(void);

static void *const *api;

static void check(Status s, const char *what) {
  if (s) {
    fprintf(stderr, "ort-harness: %s: %s\n", what, ((fn_error_message)api[GET_ERROR_MESSAGE])(s));
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: ort-harness MODEL INPUT OUTPUT HEIGHT WIDTH N\n");
    return 2;
  }
  const char *model = argv[1], *in_name = argv[2], *out_name = argv[3];
  int64_t shape[4] = {1, 3, atoll(argv[4]), atoll(argv[5])};
  long n = atol(argv[6]);
  const OrtApiBase *base = OrtGetApiBase();
  api = base->get_api(14);
  if (!api) {
    fprintf(stderr, "ort-harness: onnxruntime %s has no API version 14\n", base->get_version_string());
    return 1;
  }
  void *env, *opts, *session, *info, *input;
  check(((fn_create_env)api[CREATE_ENV])(3 /* error */, "ort-harness", &env), "CreateEnv");
  check(((fn_create_options)api[CREATE_SESSION_OPTIONS])(&opts), "CreateSessionOptions");
  check(((fn_set_int)api[SET_INTRA_OP_THREADS])(opts, 1), "SetIntraOpNumThreads");
  check(((fn_set_int)api[SET_INTER_OP_THREADS])(opts, 1), "SetInterOpNumThreads");
  check(((fn_set_int)api[SET_GRAPH_OPTIMIZATION_LEVEL])(opts, 99 /* all */), "SetSessionGraphOptimizationLevel");
  check(((fn_create_session)api[CREATE_SESSION])(env, model, opts, &session), model);

  size_t len = (size_t)(shape[1] * shape[2] * shape[3]);
  float *pixels = malloc(len * sizeof(float));
  uint32_t state = 0x2545f491u;
  for (size_t i = 0; i < len; i++) { /* src/bench.rs test_pattern */
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    pixels[i] = ((float)state / (float)UINT32_MAX) * 4.0f - 2.0f;
  }
  check(((fn_cpu_memory_info)api[CREATE_CPU_MEMORY_INFO])(1 /* arena */, 0 /* default */, &info),
        "CreateCpuMemoryInfo");
  check(((fn_tensor_with_data)api[CREATE_TENSOR_WITH_DATA])(info, pixels, len * sizeof(float), shape, 4,
                                                            1 /* float */, &input),
        "CreateTensorWithDataAsOrtValue");
  const char *in_names[1] = {in_name}, *out_names[1] = {out_name};
  float first[4] = {0};
  for (long i = 0; i < n; i++) {
    void *output = NULL;
    check(((fn_run)api[RUN])(session, NULL, in_names, (const void *const *)&input, 1, out_names, 1, &output),
          "Run");
    float *out;
    check(((fn_mutable_data)api[GET_TENSOR_MUTABLE_DATA])(output, (void **)&out), "GetTensorMutableData");
    for (int k = 0; k < 4; k++) first[k] = out[k];
    ((fn_release)api[RELEASE_VALUE])(output);
  }
  printf("onnxruntime %s: %ld runs of %s, output[0..4] = %g %g %g %g\n", base->get_version_string(), n, model,
         first[0], first[1], first[2], first[3]);
  return 0;
}
