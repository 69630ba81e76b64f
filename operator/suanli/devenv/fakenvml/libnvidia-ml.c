/*
 * A stand-in for the NVIDIA Management Library (libnvidia-ml.so.1) for machines without a GPU.
 *
 * Built with `gcc -shared -fPIC -Wl,-soname,libnvidia-ml.so.1` (see suanli.devenv.fakenvml), it
 * exports the subset of the NVML C API that suanli's exporter calls through nvidia-ml-py
 * (pynvml), so tests exercise pynvml's real loading, struct layouts and error mapping. The GPUs
 * it reports come from a JSON state file named by the environment variable
 * SUANLI_FAKE_NVML_STATE. Every call stat()s that file and re-reads it when its inode, size or
 * modification time changed, so a test can change a running process's GPUs by rewriting the
 * file (write a temporary file, then rename it over the old one).
 *
 * State file format (one JSON object; unknown keys are skipped, every key is optional):
 *
 *   {
 *     "driver_version": "550.54.15",          nvmlSystemGetDriverVersion
 *     "nvml_version": "12.550.54.15",         nvmlSystemGetNVMLVersion
 *     "cuda_driver_version": 12040,           nvmlSystemGetCudaDriverVersion
 *     "init_error": 0,                        non-zero: nvmlInit returns this NVML error code
 *     "gpus": [                               at most 64; position in the list = NVML index
 *       {
 *         "index": 0,                         optional; when present it must equal the position
 *         "name": "NVIDIA H100 80GB HBM3",
 *         "uuid": "GPU-...",
 *         "pci_bus_id": "00000000:07:00.0",   domain:bus:device.function, hexadecimal
 *         "memory_total": 85899345920,        bytes
 *         "memory_used": 0,                   bytes allocated by processes (excludes reserved)
 *         "memory_reserved": 536870912,       bytes the driver keeps for itself
 *         "utilization_gpu": 0,               percent
 *         "utilization_memory": 0,            percent
 *         "temperature": 35,                  degrees C
 *         "power_usage": 70000,               milliwatts
 *         "ecc_sbe_volatile": 0,              ECC error counters: single/double bit,
 *         "ecc_dbe_volatile": 0,                volatile (since driver load) / aggregate
 *         "ecc_sbe_aggregate": 0,
 *         "ecc_dbe_aggregate": 0,
 *         "xid_errors": [79],                 XID log, oldest first, at most 64 entries; an entry
 *                                             appended after a process registered for
 *                                             XidCriticalError events is delivered to it once
 *         "fail": {"nvmlDeviceGetUtilizationRates": 15}
 *                                             make this call return this NVML error code for this
 *                                             GPU; a name without a _vN suffix covers every version
 *       }
 *     ]
 *   }
 *
 * Numbers are non-negative integers. Strings accept the JSON escapes, \u included.
 *
 * Failure modes: with the variable unset or the file missing, nvmlInit returns
 * NVML_ERROR_DRIVER_NOT_LOADED (as on a node whose driver is not loaded); if the file goes away
 * later, calls return the same error. A file that does not parse fails nvmlInit with
 * NVML_ERROR_UNKNOWN and a message on stderr; once initialised, a file that does not parse is
 * reported on stderr and the last good state is kept, so a careless writer cannot crash a test.
 *
 * Thread safety: one mutex guards the state, as NVML itself is safe to call from many threads;
 * nvmlEventSetWait sleeps without holding it.
 */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Only the NVML entry points are exported; everything else stays private to the library. */
#define API __attribute__((visibility("default")))

#define STATE_ENV "SUANLI_FAKE_NVML_STATE"
#define MAX_GPUS 64
#define MAX_XIDS 64
#define MAX_FAILS 16
#define MAX_STATE_BYTES (4 * 1024 * 1024)
#define MAX_DEPTH 32
#define TEXT_CAP 96
#define CALL_CAP 128
#define BUS_ID_CAP 32

/* Return codes, with the values of NVML's nvml.h (nvmlReturn_t is an int-sized enum). */
typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define NVML_TEMPERATURE_GPU 0
#define NVML_EVENT_TYPE_XID_CRITICAL_ERROR 0x0000000000000008ULL
/* NVML's versioned structs carry (version << 24) | sizeof(struct) in their first field. */
#define NVML_STRUCT_VERSION(type, v) ((unsigned int)(sizeof(type) | ((v) << 24U)))

/* Public structs, laid out exactly as nvml.h (and pynvml's ctypes mirrors) declare them. */
typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used; /* v1: allocated plus reserved */
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used; /* v2: allocated only */
} nvmlMemory_v2_t;
_Static_assert(sizeof(nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t must match nvml.h");
#define NVML_MEMORY_V2 NVML_STRUCT_VERSION(nvmlMemory_v2_t, 2U)

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[BUS_ID_CAP];
} nvmlPciInfo_t;

/* A device handle points into a fixed table, so handles stay valid across state reloads. */
typedef struct fake_device {
    unsigned int index;
} *nvmlDevice_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

struct event_set {
    unsigned long long mask[MAX_GPUS];
    unsigned int delivered[MAX_GPUS]; /* XID log entries already handed out, per GPU */
};
typedef struct event_set *nvmlEventSet_t;

/* Private model of the state file. */
struct fail_rule {
    char call[CALL_CAP];
    unsigned int code;
};

struct gpu {
    char name[TEXT_CAP];
    char uuid[TEXT_CAP];
    char pci_bus_id[BUS_ID_CAP];
    unsigned long long memory_total;
    unsigned long long memory_used;
    unsigned long long memory_reserved;
    unsigned int utilization_gpu;
    unsigned int utilization_memory;
    unsigned int temperature;
    unsigned int power_usage;
    unsigned long long ecc[2][2]; /* [error type: corrected, uncorrected][volatile, aggregate] */
    unsigned int xid_count;
    unsigned int xids[MAX_XIDS];
    unsigned int fail_count;
    struct fail_rule fails[MAX_FAILS];
};

struct state {
    char driver_version[TEXT_CAP];
    char nvml_version[TEXT_CAP];
    unsigned int cuda_driver_version;
    unsigned int init_error;
    unsigned int gpu_count;
    struct gpu gpus[MAX_GPUS];
};

/* The file identity last loaded: any change of these means the file was rewritten. */
struct stamp {
    int valid;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int g_init_count;
static struct state g_state;
static struct state g_scratch; /* parse target, copied over g_state only on success */
static struct stamp g_stamp;
static struct fake_device g_devices[MAX_GPUS];

/* ------------------------------------------------------------------------------------------ */
/* A small JSON reader that fills struct state directly, no tree in between.                  */

struct parser {
    const char *p;
    const char *start;
    const char *end;
    const char *error;
    int depth;
};

static int fail_at(struct parser *ps, const char *message) {
    if (ps->error == NULL) {
        ps->error = message;
    }
    return 0;
}

static void skip_ws(struct parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) {
        ps->p++;
    }
}

static int peek(struct parser *ps, char c) {
    skip_ws(ps);
    return ps->p < ps->end && *ps->p == c;
}

static int expect(struct parser *ps, char c, const char *message) {
    if (!peek(ps, c)) {
        return fail_at(ps, message);
    }
    ps->p++;
    return 1;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(struct parser *ps, unsigned int *out) {
    unsigned int value = 0;
    if (ps->end - ps->p < 4) {
        return fail_at(ps, "truncated \\u escape");
    }
    for (int i = 0; i < 4; i++) {
        int digit = hex_digit(*ps->p++);
        if (digit < 0) {
            return fail_at(ps, "bad hex digit in \\u escape");
        }
        value = (value << 4U) | (unsigned int)digit;
    }
    *out = value;
    return 1;
}

/* Appends one byte; `out` may be NULL when the caller only skips the string. */
static int put_byte(struct parser *ps, char *out, size_t cap, size_t *len, unsigned int byte) {
    if (out != NULL) {
        if (*len + 1 >= cap) {
            return fail_at(ps, "string too long");
        }
        out[*len] = (char)byte;
    }
    (*len)++;
    return 1;
}

static int put_code_point(struct parser *ps, char *out, size_t cap, size_t *len, unsigned int cp) {
    if (cp < 0x80U) {
        return put_byte(ps, out, cap, len, cp);
    }
    if (cp < 0x800U) {
        return put_byte(ps, out, cap, len, 0xC0U | (cp >> 6U)) &&
               put_byte(ps, out, cap, len, 0x80U | (cp & 0x3FU));
    }
    if (cp < 0x10000U) {
        return put_byte(ps, out, cap, len, 0xE0U | (cp >> 12U)) &&
               put_byte(ps, out, cap, len, 0x80U | ((cp >> 6U) & 0x3FU)) &&
               put_byte(ps, out, cap, len, 0x80U | (cp & 0x3FU));
    }
    return put_byte(ps, out, cap, len, 0xF0U | (cp >> 18U)) &&
           put_byte(ps, out, cap, len, 0x80U | ((cp >> 12U) & 0x3FU)) &&
           put_byte(ps, out, cap, len, 0x80U | ((cp >> 6U) & 0x3FU)) &&
           put_byte(ps, out, cap, len, 0x80U | (cp & 0x3FU));
}

/* Reads a JSON string into out (NUL-terminated, at most cap - 1 bytes); out may be NULL. */
static int parse_string(struct parser *ps, char *out, size_t cap) {
    size_t len = 0;
    if (!expect(ps, '"', "expected a string")) {
        return 0;
    }
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p++;
        if (c < 0x20U) {
            return fail_at(ps, "control character in string");
        }
        if (c != '\\') {
            if (!put_byte(ps, out, cap, &len, c)) return 0;
            continue;
        }
        if (ps->p >= ps->end) {
            return fail_at(ps, "truncated escape");
        }
        char e = *ps->p++;
        unsigned int cp = 0;
        switch (e) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (!read_hex4(ps, &cp)) return 0;
            if (cp >= 0xD800U && cp <= 0xDBFFU) {
                /* A high surrogate must be followed by an escaped low surrogate. */
                unsigned int low = 0;
                if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
                    return fail_at(ps, "unpaired surrogate");
                }
                ps->p += 2;
                if (!read_hex4(ps, &low)) return 0;
                if (low < 0xDC00U || low > 0xDFFFU) {
                    return fail_at(ps, "unpaired surrogate");
                }
                cp = 0x10000U + ((cp - 0xD800U) << 10U) + (low - 0xDC00U);
            } else if (cp >= 0xDC00U && cp <= 0xDFFFU) {
                return fail_at(ps, "unpaired surrogate");
            }
            break;
        default:
            return fail_at(ps, "unknown escape");
        }
        if (!put_code_point(ps, out, cap, &len, cp)) return 0;
    }
    if (ps->p >= ps->end) {
        return fail_at(ps, "unterminated string");
    }
    ps->p++; /* closing quote */
    if (out != NULL) {
        out[len] = '\0';
    }
    return 1;
}

static int parse_u64(struct parser *ps, unsigned long long *out) {
    unsigned long long value = 0;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
        return fail_at(ps, "expected a non-negative integer");
    }
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        unsigned int digit = (unsigned int)(*ps->p - '0');
        if (value > (~0ULL - digit) / 10U) {
            return fail_at(ps, "integer out of range");
        }
        value = value * 10U + digit;
        ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E')) {
        return fail_at(ps, "expected an integer, not a fraction");
    }
    *out = value;
    return 1;
}

static int parse_u32(struct parser *ps, unsigned int *out) {
    unsigned long long value = 0;
    if (!parse_u64(ps, &value)) return 0;
    if (value > 0xFFFFFFFFULL) {
        return fail_at(ps, "integer out of range");
    }
    *out = (unsigned int)value;
    return 1;
}

static int match_word(struct parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
        return fail_at(ps, "unexpected token");
    }
    ps->p += n;
    return 1;
}

static int skip_value(struct parser *ps);

typedef int (*member_fn)(struct parser *ps, const char *key, void *ctx);
typedef int (*item_fn)(struct parser *ps, unsigned int position, void *ctx);

/* Walks an object; `member` must consume each value. */
static int parse_object(struct parser *ps, member_fn member, void *ctx) {
    char key[CALL_CAP];
    if (!expect(ps, '{', "expected an object")) return 0;
    if (++ps->depth > MAX_DEPTH) return fail_at(ps, "nested too deeply");
    if (peek(ps, '}')) {
        ps->p++;
        ps->depth--;
        return 1;
    }
    for (;;) {
        if (!parse_string(ps, key, sizeof key)) return 0;
        if (!expect(ps, ':', "expected ':' after a key")) return 0;
        if (!member(ps, key, ctx)) return 0;
        if (peek(ps, ',')) {
            ps->p++;
            continue;
        }
        if (!expect(ps, '}', "expected ',' or '}' in an object")) return 0;
        ps->depth--;
        return 1;
    }
}

/* Walks an array; `item` must consume each element. */
static int parse_array(struct parser *ps, item_fn item, void *ctx) {
    unsigned int position = 0;
    if (!expect(ps, '[', "expected an array")) return 0;
    if (++ps->depth > MAX_DEPTH) return fail_at(ps, "nested too deeply");
    if (peek(ps, ']')) {
        ps->p++;
        ps->depth--;
        return 1;
    }
    for (;;) {
        if (!item(ps, position++, ctx)) return 0;
        if (peek(ps, ',')) {
            ps->p++;
            continue;
        }
        if (!expect(ps, ']', "expected ',' or ']' in an array")) return 0;
        ps->depth--;
        return 1;
    }
}

static int skip_member(struct parser *ps, const char *key, void *ctx) {
    (void)key;
    (void)ctx;
    return skip_value(ps);
}

static int skip_item(struct parser *ps, unsigned int position, void *ctx) {
    (void)position;
    (void)ctx;
    return skip_value(ps);
}

static int skip_value(struct parser *ps) {
    skip_ws(ps);
    if (ps->p >= ps->end) return fail_at(ps, "expected a value");
    switch (*ps->p) {
    case '{': return parse_object(ps, skip_member, NULL);
    case '[': return parse_array(ps, skip_item, NULL);
    case '"': return parse_string(ps, NULL, 0);
    case 't': return match_word(ps, "true");
    case 'f': return match_word(ps, "false");
    case 'n': return match_word(ps, "null");
    default: break;
    }
    /* Any JSON number, signed or fractional: unknown keys may hold one. */
    if (*ps->p == '-') ps->p++;
    const char *digits = ps->p;
    while (ps->p < ps->end && strchr("0123456789.eE+-", *ps->p) != NULL) ps->p++;
    return ps->p > digits ? 1 : fail_at(ps, "expected a value");
}

static int xid_item(struct parser *ps, unsigned int position, void *ctx) {
    struct gpu *gpu = ctx;
    if (position >= MAX_XIDS) return fail_at(ps, "more than 64 xid_errors entries");
    if (!parse_u32(ps, &gpu->xids[position])) return 0;
    gpu->xid_count = position + 1;
    return 1;
}

static int fail_member(struct parser *ps, const char *key, void *ctx) {
    struct gpu *gpu = ctx;
    if (gpu->fail_count >= MAX_FAILS) return fail_at(ps, "more than 16 fail entries");
    struct fail_rule *rule = &gpu->fails[gpu->fail_count];
    snprintf(rule->call, sizeof rule->call, "%s", key);
    if (!parse_u32(ps, &rule->code)) return 0;
    if (rule->code == NVML_SUCCESS) return 1; /* 0 means "do not fail": no rule */
    gpu->fail_count++;
    return 1;
}

struct gpu_ctx {
    struct gpu *gpu;
    unsigned int position;
};

static int gpu_member(struct parser *ps, const char *key, void *ctx) {
    struct gpu_ctx *g = ctx;
    struct gpu *gpu = g->gpu;
    if (strcmp(key, "index") == 0) {
        unsigned int index = 0;
        if (!parse_u32(ps, &index)) return 0;
        return index == g->position ? 1 : fail_at(ps, "gpus[i].index must equal its position i");
    }
    if (strcmp(key, "name") == 0) return parse_string(ps, gpu->name, sizeof gpu->name);
    if (strcmp(key, "uuid") == 0) return parse_string(ps, gpu->uuid, sizeof gpu->uuid);
    if (strcmp(key, "pci_bus_id") == 0) return parse_string(ps, gpu->pci_bus_id, sizeof gpu->pci_bus_id);
    if (strcmp(key, "memory_total") == 0) return parse_u64(ps, &gpu->memory_total);
    if (strcmp(key, "memory_used") == 0) return parse_u64(ps, &gpu->memory_used);
    if (strcmp(key, "memory_reserved") == 0) return parse_u64(ps, &gpu->memory_reserved);
    if (strcmp(key, "utilization_gpu") == 0) return parse_u32(ps, &gpu->utilization_gpu);
    if (strcmp(key, "utilization_memory") == 0) return parse_u32(ps, &gpu->utilization_memory);
    if (strcmp(key, "temperature") == 0) return parse_u32(ps, &gpu->temperature);
    if (strcmp(key, "power_usage") == 0) return parse_u32(ps, &gpu->power_usage);
    if (strcmp(key, "ecc_sbe_volatile") == 0) return parse_u64(ps, &gpu->ecc[0][0]);
    if (strcmp(key, "ecc_sbe_aggregate") == 0) return parse_u64(ps, &gpu->ecc[0][1]);
    if (strcmp(key, "ecc_dbe_volatile") == 0) return parse_u64(ps, &gpu->ecc[1][0]);
    if (strcmp(key, "ecc_dbe_aggregate") == 0) return parse_u64(ps, &gpu->ecc[1][1]);
    if (strcmp(key, "xid_errors") == 0) {
        gpu->xid_count = 0;
        return parse_array(ps, xid_item, gpu);
    }
    if (strcmp(key, "fail") == 0) {
        gpu->fail_count = 0;
        return parse_object(ps, fail_member, gpu);
    }
    return skip_value(ps);
}

static int gpu_item(struct parser *ps, unsigned int position, void *ctx) {
    struct state *st = ctx;
    if (position >= MAX_GPUS) return fail_at(ps, "more than 64 gpus");
    struct gpu *gpu = &st->gpus[position];
    memset(gpu, 0, sizeof *gpu);
    /* Defaults that keep a minimal entry usable; a UUID must be unique per GPU. */
    snprintf(gpu->name, sizeof gpu->name, "NVIDIA Stand-in GPU");
    snprintf(gpu->uuid, sizeof gpu->uuid, "GPU-00000000-0000-0000-0000-%012x", position);
    snprintf(gpu->pci_bus_id, sizeof gpu->pci_bus_id, "00000000:%02X:00.0", position + 1U);
    struct gpu_ctx g = {gpu, position};
    if (!parse_object(ps, gpu_member, &g)) return 0;
    st->gpu_count = position + 1;
    return 1;
}

static int root_member(struct parser *ps, const char *key, void *ctx) {
    struct state *st = ctx;
    if (strcmp(key, "driver_version") == 0) return parse_string(ps, st->driver_version, sizeof st->driver_version);
    if (strcmp(key, "nvml_version") == 0) return parse_string(ps, st->nvml_version, sizeof st->nvml_version);
    if (strcmp(key, "cuda_driver_version") == 0) return parse_u32(ps, &st->cuda_driver_version);
    if (strcmp(key, "init_error") == 0) return parse_u32(ps, &st->init_error);
    if (strcmp(key, "gpus") == 0) {
        st->gpu_count = 0;
        return parse_array(ps, gpu_item, st);
    }
    return skip_value(ps);
}

static int parse_state(const char *text, size_t len, struct state *st, const char **error, size_t *offset) {
    struct parser ps = {text, text, text + len, NULL, 0};
    memset(st, 0, sizeof *st);
    snprintf(st->driver_version, sizeof st->driver_version, "550.54.15");
    snprintf(st->nvml_version, sizeof st->nvml_version, "12.550.54.15");
    st->cuda_driver_version = 12040;
    int ok = parse_object(&ps, root_member, st);
    if (ok) {
        skip_ws(&ps);
        if (ps.p != ps.end) ok = fail_at(&ps, "trailing data after the object");
    }
    *error = ps.error;
    *offset = (size_t)(ps.p - ps.start);
    return ok;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading the state file.                                                                    */

static int same_stamp(const struct stat *st) {
    return g_stamp.valid && g_stamp.dev == st->st_dev && g_stamp.ino == st->st_ino &&
           g_stamp.size == st->st_size && g_stamp.mtime.tv_sec == st->st_mtim.tv_sec &&
           g_stamp.mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Reads the whole file; returns a malloc'd buffer or NULL. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *buf = malloc(MAX_STATE_BYTES);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }
    *len = fread(buf, 1, MAX_STATE_BYTES, f);
    int too_big = (*len == MAX_STATE_BYTES);
    int failed = ferror(f);
    fclose(f);
    if (too_big || failed) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Brings g_state up to date with the file. Caller holds g_lock. */
static nvmlReturn_t refresh_locked(void) {
    const char *path = getenv(STATE_ENV);
    struct stat st;
    if (path == NULL || path[0] == '\0' || stat(path, &st) != 0) {
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    if (same_stamp(&st)) {
        return NVML_SUCCESS;
    }
    size_t len = 0;
    const char *error = "cannot read the file (missing, unreadable or over 4 MiB)";
    size_t offset = 0;
    char *text = slurp(path, &len);
    int ok = text != NULL && parse_state(text, len, &g_scratch, &error, &offset);
    free(text);
    if (!ok) {
        fprintf(stderr, "fake libnvidia-ml: %s: %s (at byte %zu)%s\n", path, error, offset,
                g_stamp.valid ? "; keeping the previous state" : "");
        /* The stamp stays old, so the next call tries again. */
        return g_stamp.valid ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
    }
    memcpy(&g_state, &g_scratch, sizeof g_state);
    g_stamp.valid = 1;
    g_stamp.dev = st.st_dev;
    g_stamp.ino = st.st_ino;
    g_stamp.size = st.st_size;
    g_stamp.mtime = st.st_mtim;
    return NVML_SUCCESS;
}

/* Locks and refreshes for a call that needs an initialised library. Always pair with leave(). */
static nvmlReturn_t enter(void) {
    pthread_mutex_lock(&g_lock);
    if (g_init_count == 0) return NVML_ERROR_UNINITIALIZED;
    return refresh_locked();
}

static void leave(void) {
    pthread_mutex_unlock(&g_lock);
}

/* Length of a call name without a trailing "_v<digits>" version suffix. */
static size_t base_length(const char *name) {
    size_t n = strlen(name);
    size_t i = n;
    while (i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9') i--;
    if (i < n && i >= 2 && name[i - 1] == 'v' && name[i - 2] == '_') return i - 2;
    return n;
}

static nvmlReturn_t injected_failure(const struct gpu *gpu, const char *call) {
    size_t call_base = base_length(call);
    for (unsigned int i = 0; i < gpu->fail_count; i++) {
        const char *rule = gpu->fails[i].call;
        /* An exact name hits one version; a name without suffix hits them all. */
        if (strcmp(rule, call) == 0 ||
            (strlen(rule) == call_base && strncmp(rule, call, call_base) == 0)) {
            return (nvmlReturn_t)gpu->fails[i].code;
        }
    }
    return NVML_SUCCESS;
}

/* enter() plus handle validation and the GPU's failure switches. Always pair with leave(). */
static nvmlReturn_t enter_device(nvmlDevice_t device, const char *call, const struct gpu **out) {
    nvmlReturn_t r = enter();
    if (r != NVML_SUCCESS) return r;
    if (device == NULL || device < g_devices || device >= g_devices + MAX_GPUS) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (device->index >= g_state.gpu_count) {
        return NVML_ERROR_GPU_IS_LOST; /* the GPU left the state file after the handle was taken */
    }
    const struct gpu *gpu = &g_state.gpus[device->index];
    r = injected_failure(gpu, call);
    if (r != NVML_SUCCESS) return r;
    *out = gpu;
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_text(char *out, unsigned int length, const char *text) {
    if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(text) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, text, strlen(text) + 1);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Library and system calls.                                                                  */

API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t r = refresh_locked();
    if (r == NVML_SUCCESS && g_state.init_error != 0) r = (nvmlReturn_t)g_state.init_error;
    if (r == NVML_SUCCESS) {
        for (unsigned int i = 0; i < MAX_GPUS; i++) g_devices[i].index = i;
        g_init_count++; /* NVML counts init/shutdown pairs */
    }
    pthread_mutex_unlock(&g_lock);
    return r;
}

API nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
API nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

API nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t r = NVML_ERROR_UNINITIALIZED;
    if (g_init_count > 0) {
        g_init_count--;
        r = NVML_SUCCESS;
    }
    pthread_mutex_unlock(&g_lock);
    return r;
}

API const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt Request Issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    nvmlReturn_t r = enter();
    if (r == NVML_SUCCESS) r = copy_text(version, length, g_state.driver_version);
    leave();
    return r;
}

API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    nvmlReturn_t r = enter();
    if (r == NVML_SUCCESS) r = copy_text(version, length, g_state.nvml_version);
    leave();
    return r;
}

API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    nvmlReturn_t r = enter();
    if (r == NVML_SUCCESS) {
        if (version == NULL) r = NVML_ERROR_INVALID_ARGUMENT;
        else *version = (int)g_state.cuda_driver_version;
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    return nvmlSystemGetCudaDriverVersion(version);
}

API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    nvmlReturn_t r = enter();
    if (r == NVML_SUCCESS) {
        if (count == NULL) r = NVML_ERROR_INVALID_ARGUMENT;
        else *count = g_state.gpu_count;
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    nvmlReturn_t r = enter();
    if (r == NVML_SUCCESS) {
        if (device == NULL || index >= g_state.gpu_count) r = NVML_ERROR_INVALID_ARGUMENT;
        else *device = &g_devices[index];
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    nvmlReturn_t r = enter();
    if (r == NVML_SUCCESS) {
        r = NVML_ERROR_NOT_FOUND;
        if (uuid == NULL || device == NULL) r = NVML_ERROR_INVALID_ARGUMENT;
        for (unsigned int i = 0; r == NVML_ERROR_NOT_FOUND && i < g_state.gpu_count; i++) {
            if (strcmp(g_state.gpus[i].uuid, uuid) == 0) {
                *device = &g_devices[i];
                r = NVML_SUCCESS;
            }
        }
    }
    leave();
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* Device queries.                                                                            */

API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) {
        if (index == NULL) r = NVML_ERROR_INVALID_ARGUMENT;
        else *index = device->index;
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) r = copy_text(name, length, gpu->name);
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) r = copy_text(uuid, length, gpu->uuid);
    leave();
    return r;
}

static unsigned long long saturating_sub(unsigned long long a, unsigned long long b) {
    return a > b ? a - b : 0;
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) {
        if (memory == NULL) {
            r = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            /* The v1 struct has no reserved field: NVML folds reserved memory into used. */
            memory->total = gpu->memory_total;
            memory->used = gpu->memory_used + gpu->memory_reserved;
            memory->free = saturating_sub(gpu->memory_total, memory->used);
        }
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) {
        if (memory == NULL) {
            r = NVML_ERROR_INVALID_ARGUMENT;
        } else if (memory->version != NVML_MEMORY_V2) {
            r = NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        } else {
            memory->total = gpu->memory_total;
            memory->reserved = gpu->memory_reserved;
            memory->used = gpu->memory_used;
            memory->free = saturating_sub(gpu->memory_total, gpu->memory_used + gpu->memory_reserved);
        }
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) {
        if (utilization == NULL) {
            r = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            utilization->gpu = gpu->utilization_gpu;
            utilization->memory = gpu->utilization_memory;
        }
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) {
        if (temp == NULL || sensor != NVML_TEMPERATURE_GPU) r = NVML_ERROR_INVALID_ARGUMENT;
        else *temp = gpu->temperature;
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) {
        if (power == NULL) r = NVML_ERROR_INVALID_ARGUMENT;
        else *power = gpu->power_usage;
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, int error_type, int counter_type,
                                             unsigned long long *count) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) {
        if (count == NULL || error_type < 0 || error_type > 1 || counter_type < 0 || counter_type > 1) {
            r = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            *count = gpu->ecc[error_type][counter_type];
        }
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) {
        unsigned int domain = 0, bus = 0, dev = 0, function = 0;
        if (pci == NULL) {
            r = NVML_ERROR_INVALID_ARGUMENT;
        } else if (sscanf(gpu->pci_bus_id, "%x:%x:%x.%x", &domain, &bus, &dev, &function) != 4) {
            r = NVML_ERROR_UNKNOWN; /* a malformed pci_bus_id in the state file */
        } else {
            memset(pci, 0, sizeof *pci);
            snprintf(pci->busId, sizeof pci->busId, "%s", gpu->pci_bus_id);
            snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X",
                     domain & 0xFFFFU, bus & 0xFFU, dev & 0xFFU, function & 0xFU);
            pci->domain = domain;
            pci->bus = bus;
            pci->device = dev;
            pci->pciDeviceId = 0x233010DEU; /* device id 0x2330 (H100 SXM), vendor NVIDIA */
            pci->pciSubSystemId = 0x16C110DEU;
        }
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return nvmlDeviceGetPciInfo_v3(device, pci);
}

/* ------------------------------------------------------------------------------------------ */
/* Events: XID critical errors only, the health signal the exporter watches.                  */

API nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    nvmlReturn_t r = enter();
    if (r == NVML_SUCCESS) {
        if (set == NULL) {
            r = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            *set = calloc(1, sizeof **set);
            if (*set == NULL) r = NVML_ERROR_MEMORY;
        }
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    nvmlReturn_t r = enter();
    if (r == NVML_SUCCESS) free(set);
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *types) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) {
        if (types == NULL) r = NVML_ERROR_INVALID_ARGUMENT;
        else *types = NVML_EVENT_TYPE_XID_CRITICAL_ERROR;
    }
    leave();
    return r;
}

API nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types,
                                          nvmlEventSet_t set) {
    const struct gpu *gpu = NULL;
    nvmlReturn_t r = enter_device(device, __func__, &gpu);
    if (r == NVML_SUCCESS) {
        if (set == NULL) {
            r = NVML_ERROR_INVALID_ARGUMENT;
        } else if ((types & ~NVML_EVENT_TYPE_XID_CRITICAL_ERROR) != 0) {
            r = NVML_ERROR_NOT_SUPPORTED;
        } else {
            /* Like NVML, a new registration sees only errors that happen from now on. */
            set->mask[device->index] |= types;
            set->delivered[device->index] = gpu->xid_count;
        }
    }
    leave();
    return r;
}

/* Hands out the oldest undelivered XID of any registered GPU. Caller holds g_lock. */
static int next_event_locked(nvmlEventSet_t set, nvmlEventData_t *data) {
    for (unsigned int i = 0; i < g_state.gpu_count; i++) {
        const struct gpu *gpu = &g_state.gpus[i];
        if ((set->mask[i] & NVML_EVENT_TYPE_XID_CRITICAL_ERROR) == 0) continue;
        if (set->delivered[i] > gpu->xid_count) set->delivered[i] = gpu->xid_count; /* log rewritten */
        if (set->delivered[i] == gpu->xid_count) continue;
        memset(data, 0, sizeof *data);
        data->device = &g_devices[i];
        data->eventType = NVML_EVENT_TYPE_XID_CRITICAL_ERROR;
        data->eventData = gpu->xids[set->delivered[i]++];
        data->gpuInstanceId = 0xFFFFFFFFU; /* not a MIG instance */
        data->computeInstanceId = 0xFFFFFFFFU;
        return 1;
    }
    return 0;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

API nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    if (set == NULL || data == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    double deadline = now_ms() + (double)timeoutms;
    for (;;) {
        nvmlReturn_t r = enter();
        int found = (r == NVML_SUCCESS) && next_event_locked(set, data);
        leave();
        if (r != NVML_SUCCESS) return r;
        if (found) return NVML_SUCCESS;
        double left = deadline - now_ms();
        if (left <= 0) return NVML_ERROR_TIMEOUT;
        /* Poll the state file every 10 ms; sleep outside the lock so other calls go on. */
        double step = left < 10.0 ? left : 10.0;
        struct timespec pause = {0, (long)(step * 1e6)};
        while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
        }
    }
}

API nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    return nvmlEventSetWait_v2(set, data, timeoutms);
}
