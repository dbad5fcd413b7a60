/* conform.c: check a C-ABI attention kernel against a refimpl export, with a C compiler alone (no Python).
 *
 *     gcc -std=c11 -O2 -Wall -Wextra -o conform conform.c -ldl -lm
 *     ./conform DIR LIB.so SYMBOL [--timeout SECONDS]
 *
 * DIR is what `refimpl export --out DIR` wrote (index.json and one JSON file per case, schema refimpl-export/1).
 * SYMBOL is a function of the C ABI in refimpl_attention.h (next to this file), the one
 * `refimpl check --target c:LIB.so:SYMBOL` calls, and it is called as that does: q, k, v as double
 * (dtype_bits 64) for a float64 case and as float (32) for the others (float16/bfloat16 values are exact in
 * float), keep NULL or (B, Hq, Sq, Sk) bytes, shape {B, Hq, Hkv, Sq, Sk, D, Dv}, the case's scale or
 * 1/sqrt(D), out prefilled with NaN, and a NaN-filled weights buffer when the case has expected weights.
 * Each call runs in a fork()ed child with a time limit (default 30 s): a crash (segfault, abort, exit) is that
 * case's `crash`, a hang its `timeout`, and the run goes on.
 *
 * Verdicts, as tools/conform.mjs: a non-zero return code is the case's error; an output row with a key must lie
 * within the case's tolerance of the expected float64 output (`atol` for a float64 case, `atol_<dtype>` for
 * a case run in float); a row with no key (dead_rows) may be zeros, NaN or the mean of V; padding rows
 * (absent_rows) are not judged. Weights the kernel wrote (any not NaN) are judged on rows with a key when the
 * case has expected ones (`weights_atol`, or K_FORWARD * u(dtype) * n_terms in float), as `refimpl check`
 * does. Cases the ABI cannot express (additive masks, softcap, ALiBi) are n/a.
 * Prints one line per case (pass RATIO ID | FAIL RATIO ID: why | error ID: why | crash ID: why |
 * timeout ID: why | n/a ID: why), then "N passed, N failed, N n/a" and "RESULT: all targets conform" (exit 0)
 * or "RESULT: NON-CONFORMANCE" (exit 1); "RESULT: NOTHING CHECKED" when no case was judged, and a bad command
 * line, export index, library or symbol, are exit 2 with the reason on stderr.
 * A case file that is not JSON, or not a case, is that case's error and the run goes on.
 */
#define _DEFAULT_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "refimpl_attention.h"

#define USAGE "usage: conform DIR LIB.so SYMBOL [--timeout SECONDS]"

/* ------------------------------------------------------------------------------------------------------------
 * A strict JSON parser (RFC 8259): objects, arrays, numbers, strings with every escape, true, false, null.
 * No comments, no trailing commas, no leading zeros, no NaN/Infinity literals, nothing after the value.
 * ------------------------------------------------------------------------------------------------------------ */
enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {         /* 16 bytes: a case file holds millions of them */
    uint32_t t;
    uint32_t n;               /* string length, number of items, or number of members */
    union {
        double num;
        char *str;            /* NUL-terminated (may also hold NULs: n is the length) */
        struct jv *items;     /* array items; an object's members as 2n items: key (a string), value */
    } u;
} jv;

typedef struct {
    const char *start, *p, *end;
    int depth;
    char err[256];
} jparser;

#define MAX_DEPTH 200

static size_t jcount(const jv *v) { return v->t == J_OBJ ? 2 * (size_t)v->n : v->n; }

static void jfree_inner(const jv *v) {
    if (v->t == J_STR) {
        free(v->u.str);
    } else if (v->t == J_ARR || v->t == J_OBJ) {
        for (size_t i = 0, n = jcount(v); i < n; i++) jfree_inner(&v->u.items[i]);
        free(v->u.items);
    }
}

static void jfree(jv *v) {                 /* only the top node is reset: writes to every node cost page faults */
    jfree_inner(v);
    v->t = J_NULL;
    v->n = 0;
}

static int jerr(jparser *ps, const char *fmt, ...) {
    long line = 1, col = 1;
    for (const char *c = ps->start; c < ps->p && c < ps->end; c++) {
        if (*c == '\n') { line++; col = 1; } else col++;
    }
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(ps->err, sizeof ps->err, "not JSON: %s at line %ld column %ld", what, line, col);
    return -1;
}

static void skip_ws(jparser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(jparser *ps, unsigned *out) {
    if (ps->end - ps->p < 4) return jerr(ps, "a truncated \\u escape");
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)ps->p[i]);
        if (h < 0) return jerr(ps, "a \\u escape that is not 4 hex digits");
        x = x * 16 + (unsigned)h;
    }
    ps->p += 4;
    *out = x;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* at the opening quote; *s gets a malloc'd NUL-terminated string of length *n */
static int parse_string(jparser *ps, char **s, size_t *n) {
    ps->p++;
    const char *q = ps->p;                   /* the decoded string is never longer than its source */
    while (q < ps->end && *q != '"') q += (*q == '\\' && q + 1 < ps->end) ? 2 : 1;
    char *o = malloc((size_t)(q - ps->p) + 1);
    if (!o) return jerr(ps, "out of memory");
    size_t len = 0;
    for (;;) {
        if (ps->p >= ps->end) { free(o); return jerr(ps, "an unterminated string"); }
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') { ps->p++; break; }
        if (c < 0x20) { free(o); return jerr(ps, "a control character (0x%02x) in a string", c); }
        if (c != '\\') { o[len++] = (char)c; ps->p++; continue; }
        ps->p++;
        if (ps->p >= ps->end) { free(o); return jerr(ps, "an unterminated string"); }
        char e = *ps->p++;
        switch (e) {
        case '"': o[len++] = '"'; break;
        case '\\': o[len++] = '\\'; break;
        case '/': o[len++] = '/'; break;
        case 'b': o[len++] = '\b'; break;
        case 'f': o[len++] = '\f'; break;
        case 'n': o[len++] = '\n'; break;
        case 'r': o[len++] = '\r'; break;
        case 't': o[len++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (read_hex4(ps, &cp)) { free(o); return -1; }
            if (cp >= 0xDC00 && cp <= 0xDFFF) { free(o); return jerr(ps, "a lone low surrogate \\u%04X", cp); }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
                    free(o);
                    return jerr(ps, "a high surrogate \\u%04X not followed by a low one", cp);
                }
                ps->p += 2;
                if (read_hex4(ps, &lo)) { free(o); return -1; }
                if (lo < 0xDC00 || lo > 0xDFFF) { free(o); return jerr(ps, "a high surrogate without its low one"); }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            len += put_utf8(o + len, cp);
            break;
        }
        default:
            free(o);
            ps->p--;
            return jerr(ps, "an invalid escape \\%c", e);
        }
    }
    o[len] = '\0';
    *s = o;
    *n = len;
    return 0;
}

static int parse_number(jparser *ps, double *out) {
    const char *b = ps->p, *c = ps->p;
    if (c < ps->end && *c == '-') c++;
    if (c >= ps->end || !(*c >= '0' && *c <= '9')) { ps->p = c; return jerr(ps, "a malformed number"); }
    if (*c == '0') {
        c++;
        if (c < ps->end && *c >= '0' && *c <= '9') { ps->p = c; return jerr(ps, "a number with a leading zero"); }
    } else {
        while (c < ps->end && *c >= '0' && *c <= '9') c++;
    }
    if (c < ps->end && *c == '.') {
        c++;
        if (c >= ps->end || !(*c >= '0' && *c <= '9')) { ps->p = c; return jerr(ps, "no digit after a decimal point"); }
        while (c < ps->end && *c >= '0' && *c <= '9') c++;
    }
    if (c < ps->end && (*c == 'e' || *c == 'E')) {
        c++;
        if (c < ps->end && (*c == '+' || *c == '-')) c++;
        if (c >= ps->end || !(*c >= '0' && *c <= '9')) { ps->p = c; return jerr(ps, "no digit in an exponent"); }
        while (c < ps->end && *c >= '0' && *c <= '9') c++;
    }
    char buf[512];
    size_t len = (size_t)(c - b);
    if (len >= sizeof buf) return jerr(ps, "a number of more than %d characters", (int)sizeof buf - 1);
    memcpy(buf, b, len);
    buf[len] = '\0';
    errno = 0;
    double x = strtod(buf, NULL);
    if (errno == ERANGE && isinf(x)) return jerr(ps, "a number beyond the float64 range (%s)", buf);
    ps->p = c;
    *out = x;
    return 0;
}

static int parse_value(jparser *ps, jv *out);

static int grow(jparser *ps, jv **items, size_t used, size_t more, size_t *cap) {
    if (used + more <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 8;
    if (nc > UINT32_MAX) return jerr(ps, "an array of more than 2^31 items");
    jv *ni = realloc(*items, nc * sizeof **items);
    if (!ni) return jerr(ps, "out of memory");
    *items = ni;
    *cap = nc;
    return 0;
}

static int parse_container(jparser *ps, jv *out, int obj) {
    char close = obj ? '}' : ']';
    if (++ps->depth > MAX_DEPTH) return jerr(ps, "nesting deeper than %d", MAX_DEPTH);
    ps->p++;
    out->t = obj ? J_OBJ : J_ARR;
    out->n = 0;
    out->u.items = NULL;
    size_t cap = 0, used = 0;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) { ps->p++; ps->depth--; return 0; }
    for (;;) {
        skip_ws(ps);
        if (grow(ps, &out->u.items, used, obj ? 2 : 1, &cap)) return -1;
        if (obj) {
            jv *key = &out->u.items[used];
            char *name;
            size_t klen;
            if (ps->p >= ps->end || *ps->p != '"') return jerr(ps, "expected a member name in quotes");
            if (parse_string(ps, &name, &klen)) return -1;
            for (size_t i = 0; i < out->n; i++)
                if (strcmp(out->u.items[2 * i].u.str, name) == 0) {
                    jerr(ps, "a duplicate member \"%.60s\"", name);
                    free(name);
                    return -1;
                }
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') { free(name); return jerr(ps, "expected ':'"); }
            ps->p++;
            skip_ws(ps);
            key->t = J_STR;
            key->n = (uint32_t)klen;
            key->u.str = name;
            used++;
        }
        jv *item = &out->u.items[used];
        if (parse_value(ps, item)) {
            jfree(item);
            if (obj) free(out->u.items[--used].u.str);
            return -1;
        }
        used++;
        out->n++;
        skip_ws(ps);
        if (ps->p >= ps->end) return jerr(ps, obj ? "an unterminated object" : "an unterminated array");
        if (*ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == close) return jerr(ps, "a trailing comma");
            continue;
        }
        if (*ps->p == close) { ps->p++; break; }
        return jerr(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    ps->depth--;
    return 0;
}

static int literal(jparser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return jerr(ps, "an unexpected character");
    ps->p += n;
    return 0;
}

static int parse_value(jparser *ps, jv *out) {
    out->t = J_NULL;
    out->n = 0;
    if (ps->p >= ps->end) return jerr(ps, "an unexpected end of input");
    switch (*ps->p) {
    case '{': return parse_container(ps, out, 1);
    case '[': return parse_container(ps, out, 0);
    case '"': {
        char *s;
        size_t n;
        if (parse_string(ps, &s, &n)) return -1;
        if (n > UINT32_MAX) { free(s); return jerr(ps, "a string of more than 4 GB"); }
        out->t = J_STR;
        out->u.str = s;
        out->n = (uint32_t)n;
        return 0;
    }
    case 't': if (literal(ps, "true")) return -1; out->t = J_TRUE; return 0;
    case 'f': if (literal(ps, "false")) return -1; out->t = J_FALSE; return 0;
    case 'n': if (literal(ps, "null")) return -1; out->t = J_NULL; return 0;
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) {
            out->t = J_NUM;
            return parse_number(ps, &out->u.num);
        }
        return jerr(ps, "an unexpected character '%c'", (*ps->p >= 0x20 && *ps->p < 0x7f) ? *ps->p : '?');
    }
}

/* the whole text: one value and nothing after it (err gets the reason on failure) */
static int jparse(const char *text, size_t len, jv *out, char *err, size_t errlen) {
    jparser ps = {text, text, text + len, 0, ""};
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) ps.p += 3;   /* a UTF-8 byte order mark */
    skip_ws(&ps);
    int rc = parse_value(&ps, out);
    if (rc == 0) {
        skip_ws(&ps);
        if (ps.p != ps.end) rc = jerr(&ps, "more text after the JSON value");
    }
    if (rc) {
        jfree(out);
        snprintf(err, errlen, "%s", ps.err);
    }
    return rc;
}

static jv *jget(const jv *obj, const char *key) {
    if (!obj || obj->t != J_OBJ) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->u.items[2 * i].u.str, key) == 0) return &obj->u.items[2 * i + 1];
    return NULL;
}

static int jnull(const jv *v) { return v == NULL || v->t == J_NULL; }

/* ------------------------------------------------------------------------------------------------------------
 * Reading files and the export's arrays ({dtype, shape, values})
 * ------------------------------------------------------------------------------------------------------------ */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "%s", strerror(errno)); return NULL; }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) { fclose(f); snprintf(err, errlen, "out of memory"); return NULL; }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) free(buf);
        buf = nb;
        cap *= 2;
    }
    if (ferror(f)) { snprintf(err, errlen, "%s", strerror(errno ? errno : EIO)); free(buf); fclose(f); return NULL; }
    fclose(f);
    *len = n;
    return buf;
}

static char why[640];                 /* the reason a case is malformed */

static int bad(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return -1;
}

#define MAX_NDIM 8

typedef struct {
    int present;                      /* 0: the array is null */
    int is_bool;
    int ndim;
    int64_t shape[MAX_NDIM];
    size_t n;
    double *d;                        /* float64 values */
    unsigned char *b;                 /* bool values, 0/1 */
} array;

static void array_free(array *a) {
    free(a->d);
    free(a->b);
    memset(a, 0, sizeof *a);
}

static int fill(const jv *v, const array *a, int dim, size_t *at, const char *name) {
    if (dim == a->ndim) {
        if (a->is_bool) {
            if (v->t != J_TRUE && v->t != J_FALSE) return bad("%s: a value that is not true or false", name);
            a->b[(*at)++] = v->t == J_TRUE;
            return 0;
        }
        double x;
        if (v->t == J_NUM) x = v->u.num;
        else if (v->t == J_STR && strcmp(v->u.str, "NaN") == 0) x = NAN;
        else if (v->t == J_STR && strcmp(v->u.str, "Inf") == 0) x = INFINITY;
        else if (v->t == J_STR && strcmp(v->u.str, "-Inf") == 0) x = -INFINITY;
        else return bad("%s: a value that is not a number (nor \"Inf\", \"-Inf\", \"NaN\")", name);
        a->d[(*at)++] = x;
        return 0;
    }
    if (v->t != J_ARR || (int64_t)v->n != a->shape[dim])
        return bad("%s: values do not match its shape (axis %d should hold %lld items)", name, dim,
                   (long long)a->shape[dim]);
    for (size_t i = 0; i < v->n; i++)
        if (fill(&v->u.items[i], a, dim + 1, at, name)) return -1;
    return 0;
}

/* parent[key] as an array of dtype "bool" (want_bool) or "float64"; shape checked against want (ndim entries,
 * -1: any extent) when want is not NULL. A null array is present = 0 if nullable, an error otherwise. */
static int get_array(const jv *parent, const char *pname, const char *key, int want_bool, int nullable,
                     int ndim, const int64_t *want, array *a) {
    char name[96];
    snprintf(name, sizeof name, "%s.%s", pname, key);
    memset(a, 0, sizeof *a);
    const jv *v = jget(parent, key);
    if (!v) return bad("no %s", name);
    if (v->t == J_NULL) return nullable ? 0 : bad("%s is null", name);
    if (v->t != J_OBJ) return bad("%s is not an array object {dtype, shape, values}", name);
    const jv *dt = jget(v, "dtype"), *sh = jget(v, "shape"), *vals = jget(v, "values");
    if (!dt || dt->t != J_STR || !sh || sh->t != J_ARR || !vals)
        return bad("%s is not an array object {dtype, shape, values}", name);
    if (strcmp(dt->u.str, want_bool ? "bool" : "float64") != 0)
        return bad("%s has dtype \"%.40s\", expected \"%s\"", name, dt->u.str, want_bool ? "bool" : "float64");
    if ((int)sh->n != ndim) return bad("%s has %d axes, expected %d", name, (int)sh->n, ndim);
    a->ndim = ndim;
    a->is_bool = want_bool;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        const jv *e = &sh->u.items[i];
        if (e->t != J_NUM || e->u.num < 0 || e->u.num != floor(e->u.num) || e->u.num > 1e12)
            return bad("%s: its shape is not a list of non-negative integers", name);
        a->shape[i] = (int64_t)e->u.num;
        if (want && want[i] >= 0 && a->shape[i] != want[i])
            return bad("%s has extent %lld on axis %d, expected %lld", name, (long long)a->shape[i], i,
                       (long long)want[i]);
        if (a->shape[i] && n > SIZE_MAX / 16 / (size_t)a->shape[i]) return bad("%s is too large", name);
        n *= (size_t)a->shape[i];
    }
    a->n = n;
    if (want_bool) a->b = malloc(n ? n : 1);
    else a->d = malloc((n ? n : 1) * sizeof(double));
    if (!a->b && !a->d) return bad("%s: out of memory", name);
    size_t at = 0;
    if (fill(vals, a, 0, &at, name)) { array_free(a); return -1; }
    a->present = 1;
    return 0;
}

static int get_number(const jv *obj, const char *pname, const char *key, double *out) {
    const jv *v = jget(obj, key);
    if (!v || v->t != J_NUM) return bad("%s.%s is not a number", pname, key);
    *out = v->u.num;
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------
 * Calling the kernel in a child process
 * ------------------------------------------------------------------------------------------------------------ */
typedef struct {
    volatile int rc;
    volatile int done;
} call_header;

enum { CALL_OK, CALL_CRASH, CALL_TIMEOUT, CALL_HARNESS };

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGTRAP: return "SIGTRAP";
    case SIGSYS: return "SIGSYS";
    case SIGALRM: return "SIGALRM";
    case SIGPIPE: return "SIGPIPE";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    default: return NULL;
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* fn(...) in a child; out and weights live in the shared mapping hdr points into. detail: the crash's reason. */
static int call_in_child(refimpl_attention_fn fn, int bits, const void *q, const void *k, const void *v,
                         const unsigned char *keep, const int64_t shape[7], double scale, void *out, void *weights,
                         call_header *hdr, double timeout, char *detail, size_t dlen) {
    int fds[2];
    if (pipe(fds) != 0) { snprintf(detail, dlen, "harness: pipe: %s", strerror(errno)); return CALL_HARNESS; }
    fflush(NULL);                                    /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        snprintf(detail, dlen, "harness: fork: %s", strerror(errno));
        return CALL_HARNESS;
    }
    if (pid == 0) {
        close(fds[0]);
        hdr->rc = fn(bits, q, k, v, keep, shape, scale, out, weights);
        hdr->done = 1;
        fflush(NULL);                                /* what the kernel printed */
        _exit(0);
    }
    close(fds[1]);                                   /* the child's end closes when it ends, however it ends */
    double deadline = now_s() + timeout;
    int status = 0, reaped = 0;
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) break;
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int r = poll(&pfd, 1, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r > 0) {
            char c;
            ssize_t got = read(fds[0], &c, 1);
            if (got > 0) continue;                   /* nobody writes here, but ignore it if they do */
            if (got < 0 && errno == EINTR) continue;
            /* EOF: the child (or every process holding its end) is gone */
            if (waitpid(pid, &status, 0) == pid) reaped = 1;
            break;
        }
        if (r == 0) continue;                        /* poll's own timeout: check the clock again */
        break;
    }
    close(fds[0]);
    if (!reaped && waitpid(pid, &status, WNOHANG) == pid) reaped = 1;
    if (!reaped) {                                   /* still running past the limit */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        snprintf(detail, dlen, "no answer in %g s", timeout);
        return CALL_TIMEOUT;
    }
    if (WIFSIGNALED(status)) {
        const char *name = signal_name(WTERMSIG(status));
        if (name) snprintf(detail, dlen, "killed by %s", name);
        else snprintf(detail, dlen, "killed by signal %d", WTERMSIG(status));
        return CALL_CRASH;
    }
    if (!hdr->done) {
        snprintf(detail, dlen, "the kernel ended the process (exit code %d) instead of returning",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return CALL_CRASH;
    }
    return CALL_OK;
}

/* ------------------------------------------------------------------------------------------------------------
 * One case
 * ------------------------------------------------------------------------------------------------------------ */
enum { V_PASS, V_FAIL, V_ERROR, V_CRASH, V_TIMEOUT, V_NA };

/* Number.prototype.toPrecision(p), as conform.mjs prints ratios */
static const char *to_precision(double x, int p, char *buf, size_t len) {
    if (isnan(x)) { snprintf(buf, len, "NaN"); return buf; }
    if (isinf(x)) { snprintf(buf, len, x > 0 ? "Infinity" : "-Infinity"); return buf; }
    char e[64];
    snprintf(e, sizeof e, "%.*e", p - 1, x);
    char *ep = strchr(e, 'e');
    int exp10 = atoi(ep + 1);
    if (x != 0 && (exp10 < -6 || exp10 >= p)) {
        *ep = '\0';
        snprintf(buf, len, "%se%c%d", e, exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    } else {
        snprintf(buf, len, "%.*f", x == 0 ? p - 1 : (p - 1 - exp10 > 0 ? p - 1 - exp10 : 0), x);
    }
    return buf;
}

static double unit_roundoff(const char *dtype) {
    if (strcmp(dtype, "float64") == 0) return ldexp(1.0, -53);
    if (strcmp(dtype, "float32") == 0) return ldexp(1.0, -24);
    if (strcmp(dtype, "float16") == 0) return ldexp(1.0, -11);
    if (strcmp(dtype, "bfloat16") == 0) return ldexp(1.0, -8);
    return 0;
}

typedef struct {
    refimpl_attention_fn fn;
    const char *symbol;
    double timeout;
} kernel;

typedef struct {
    array q, k, v, keep, mask, out, dead, absent, weights;
    float *qf, *kf, *vf;
    double *mean;
} case_arrays;

static void case_free(case_arrays *c) {
    array *all[] = {&c->q, &c->k, &c->v, &c->keep, &c->mask, &c->out, &c->dead, &c->absent, &c->weights};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) array_free(all[i]);
    free(c->qf);
    free(c->kf);
    free(c->vf);
    free(c->mean);
}

static float *to_float(const array *a) {
    float *f = malloc((a->n ? a->n : 1) * sizeof(float));
    if (f)
        for (size_t i = 0; i < a->n; i++) f[i] = (float)a->d[i];
    return f;
}

static double ratio_of(double got, double want, double atol) {
    double d = fabs(got - want);
    if (isnan(d)) return INFINITY;
    return atol > 0 ? d / atol : (d == 0 ? 0 : INFINITY);
}

/* Judges the case in root (freed before the call: the fork then copies less); writes its line in line (id: the
 * case's own, not in root). Returns its verdict, or -1 when malformed (why says why). */
static int run_case(const kernel *kn, jv *root, const char *id, char *line, size_t llen) {
    case_arrays c;
    memset(&c, 0, sizeof c);
    int verdict = -1;
    void *map = MAP_FAILED;
    size_t maplen = 0;
    if (!root || root->t != J_OBJ) return bad("the file is not a JSON object");
    const jv *f = jget(root, "features"), *inp = jget(root, "inputs"), *ex = jget(root, "expected"),
             *tl = jget(root, "tolerance");
    if (!f || f->t != J_OBJ) return bad("no features object");
    if (!inp || inp->t != J_OBJ) return bad("no inputs object");
    if (!ex || ex->t != J_OBJ) return bad("no expected object");
    if (!tl || tl->t != J_OBJ) return bad("no tolerance object");

    /* n/a: what the C ABI cannot express, in the order refimpl check gives the reason */
    const jv *mask = jget(inp, "mask"), *softcap = jget(f, "softcap"), *alibi = jget(f, "alibi");
    if (!jnull(mask)) {
        const jv *mdt = mask->t == J_OBJ ? jget(mask, "dtype") : NULL;
        if (!mdt || mdt->t != J_STR) return bad("inputs.mask is not an array object {dtype, shape, values}");
        if (strcmp(mdt->u.str, "bool") != 0) {
            snprintf(line, llen, "n/a %s: the C ABI (refimpl_attention.h) has no additive masks", id);
            return V_NA;
        }
    }
    if (!jnull(softcap) && softcap->t != J_FALSE) {
        snprintf(line, llen, "n/a %s: the C ABI (refimpl_attention.h) has no softcap", id);
        return V_NA;
    }
    if (alibi && alibi->t != J_NULL && alibi->t != J_FALSE) {
        snprintf(line, llen, "n/a %s: the C ABI (refimpl_attention.h) has no ALiBi", id);
        return V_NA;
    }

    const jv *dtv = jget(f, "dtype");
    if (!dtv || dtv->t != J_STR) return bad("features.dtype is not a string");
    const char *dtype = dtv->u.str;
    double u = unit_roundoff(dtype);
    if (u == 0) return bad("features.dtype \"%.40s\" is none of float64, float32, float16, bfloat16", dtype);
    int f64 = strcmp(dtype, "float64") == 0;

    if (get_array(inp, "inputs", "q", 0, 0, 4, NULL, &c.q)) goto done;
    int64_t B = c.q.shape[0], Hq = c.q.shape[1], Sq = c.q.shape[2], D = c.q.shape[3];
    int64_t want_v[4] = {B, -1, -1, -1};
    if (get_array(inp, "inputs", "v", 0, 0, 4, want_v, &c.v)) goto done;
    int64_t Hkv = c.v.shape[1], Sk = c.v.shape[2], Dv = c.v.shape[3];
    int64_t want_k[4] = {B, Hkv, Sk, D}, want_keep[4] = {B, Hq, Sq, Sk}, want_out[4] = {B, Hq, Sq, Dv},
            want_rows[3] = {B, Hq, Sq};
    if (get_array(inp, "inputs", "k", 0, 0, 4, want_k, &c.k)) goto done;
    if (Hkv == 0 || Hq % Hkv != 0) {
        bad("Hq = %lld is not a multiple of Hkv = %lld", (long long)Hq, (long long)Hkv);
        goto done;
    }
    if (get_array(inp, "inputs", "keep", 1, 1, 4, want_keep, &c.keep)) goto done;
    if (get_array(ex, "expected", "output", 0, 0, 4, want_out, &c.out)) goto done;
    if (get_array(ex, "expected", "dead_rows", 1, 0, 3, want_rows, &c.dead)) goto done;
    if (get_array(ex, "expected", "absent_rows", 1, 1, 3, want_rows, &c.absent)) goto done;
    if (get_array(ex, "expected", "weights", 0, 1, 4, want_keep, &c.weights)) goto done;

    double scale;
    const jv *sc = jget(f, "scale");
    if (!sc) { bad("no features.scale"); goto done; }
    if (sc->t == J_NULL) scale = 1.0 / sqrt((double)D);          /* as refimpl's c-abi: 1/sqrt(D) */
    else if (sc->t == J_NUM) scale = sc->u.num;
    else { bad("features.scale is neither a number nor null"); goto done; }

    /* the bound for the precision the kernel computes in: atol (float64) or atol_<dtype> */
    double atol, watol = 0;
    char akey[48];
    snprintf(akey, sizeof akey, f64 ? "atol" : "atol_%s", dtype);
    if (get_number(tl, "tolerance", akey, &atol)) goto done;
    if (!(atol >= 0) || isinf(atol)) { bad("tolerance.%s is not a finite non-negative number", akey); goto done; }
    if (c.weights.present) {
        if (f64) {
            if (get_number(tl, "tolerance", "weights_atol", &watol)) goto done;
        } else {
            double kf, nt;
            if (get_number(tl, "tolerance", "K_FORWARD", &kf) || get_number(tl, "tolerance", "n_terms", &nt)) goto done;
            watol = kf * u * nt;                       /* refimpl's weights bound in the case's precision */
        }
        if (!(watol >= 0) || isinf(watol)) {
            bad("the weights' tolerance is not a finite non-negative number");
            goto done;
        }
    }

    /* the call: buffers as refimpl's c-abi passes them */
    size_t esize = f64 ? sizeof(double) : sizeof(float);
    size_t n_out = c.out.n, n_w = c.weights.present ? c.weights.n : 0;
    size_t head = (sizeof(call_header) + 63) / 64 * 64;
    size_t out_bytes = (n_out * esize + 63) / 64 * 64;
    maplen = head + out_bytes + n_w * esize;
    map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) { bad("harness: cannot map %zu bytes: %s", maplen, strerror(errno)); goto done; }
    call_header *hdr = map;
    void *out = (char *)map + head, *wbuf = n_w ? (char *)map + head + out_bytes : NULL;
    hdr->rc = 0;
    hdr->done = 0;
    for (size_t i = 0; i < n_out; i++) {
        if (f64) ((double *)out)[i] = NAN; else ((float *)out)[i] = NAN;
    }
    for (size_t i = 0; i < n_w; i++) {
        if (f64) ((double *)wbuf)[i] = NAN; else ((float *)wbuf)[i] = NAN;
    }
    const void *qp = c.q.d, *kp = c.k.d, *vp = c.v.d;
    if (!f64) {
        c.qf = to_float(&c.q);
        c.kf = to_float(&c.k);
        c.vf = to_float(&c.v);
        if (!c.qf || !c.kf || !c.vf) { bad("harness: out of memory"); goto done; }
        qp = c.qf;
        kp = c.kf;
        vp = c.vf;
    }
    const int64_t shape[7] = {B, Hq, Hkv, Sq, Sk, D, Dv};
    char detail[256];
    jfree(root);                  /* everything needed is in c: after a fork, every page the parent writes to
                                     is copied, and freeing the tree after the call would touch all of it */
    int how = call_in_child(kn->fn, f64 ? 64 : 32, qp, kp, vp, c.keep.present ? c.keep.b : NULL, shape, scale, out,
                            wbuf, hdr, kn->timeout, detail, sizeof detail);
    if (how == CALL_HARNESS) { snprintf(line, llen, "error %s: %s", id, detail); verdict = V_ERROR; goto done; }
    if (how == CALL_CRASH) { snprintf(line, llen, "crash %s: %s", id, detail); verdict = V_CRASH; goto done; }
    if (how == CALL_TIMEOUT) { snprintf(line, llen, "timeout %s: %s", id, detail); verdict = V_TIMEOUT; goto done; }
    if (hdr->rc != 0) {
        snprintf(line, llen, "error %s: the kernel %s returned error code %d", id, kn->symbol, hdr->rc);
        verdict = V_ERROR;
        goto done;
    }

    /* the verdict, as conform.mjs: rows with a key within atol; rows with none zeros, NaN or mean of V */
#define OUT(i) (f64 ? ((const double *)out)[i] : (double)((const float *)out)[i])
#define WTS(i) (f64 ? ((const double *)wbuf)[i] : (double)((const float *)wbuf)[i])
    size_t rows = (size_t)(B * Hq * Sq), dv = (size_t)Dv, sk = (size_t)Sk;
    double worst = 0, wworst = 0;
    char problem[256] = "";
    c.mean = malloc((dv ? dv : 1) * sizeof(double));
    if (!c.mean) { bad("harness: out of memory"); goto done; }
    double *mean = c.mean;
    for (size_t row = 0; row < rows && !problem[0]; row++) {
        if (c.absent.present && c.absent.b[row]) continue;
        const size_t o0 = row * dv;
        if (c.dead.b[row]) {
            size_t b = row / (size_t)(Hq * Sq), h = row / (size_t)Sq % (size_t)Hq, hk = h / (size_t)(Hq / Hkv);
            int zeros = 1, nans = 1, mean_ok = 1;
            double mx = 0;
            for (size_t e = 0; e < dv; e++) {
                double s = 0;
                for (size_t j = 0; j < sk; j++) s += c.v.d[((b * (size_t)Hkv + hk) * sk + j) * dv + e];
                mean[e] = s / (double)Sk;                /* Sk = 0: NaN, and no row is the mean */
                mx = (isnan(mean[e]) || isnan(mx)) ? NAN : fmax(mx, fabs(mean[e]));
            }
            for (size_t e = 0; e < dv; e++) {
                double x = OUT(o0 + e);
                if (x != 0) zeros = 0;
                if (!isnan(x)) nans = 0;
                if (!(isfinite(x) && fabs(x - mean[e]) <= 1e-2 * fabs(mean[e]) + 1e-3 * (1 + mx))) mean_ok = 0;
            }
            if (!(zeros || nans || mean_ok))
                snprintf(problem, sizeof problem, "a row with no key (%zu) is not zeros, NaN or the mean of V", row);
            continue;
        }
        for (size_t e = 0; e < dv; e++) {
            double r = ratio_of(OUT(o0 + e), c.out.d[o0 + e], atol);
            if (r > worst) worst = r;
        }
    }
    int weights_bad = 0;
    if (n_w && !problem[0]) {
        int wrote = 0;                                 /* refimpl check: weights all NaN = not returned */
        for (size_t i = 0; i < n_w && !wrote; i++) wrote = !isnan(WTS(i));
        for (size_t row = 0; wrote && row < rows; row++) {
            if (c.dead.b[row] || (c.absent.present && c.absent.b[row])) continue;
            for (size_t j = 0; j < sk; j++) {
                double r = ratio_of(WTS(row * sk + j), c.weights.d[row * sk + j], watol);
                if (r > wworst) wworst = r;
            }
        }
        weights_bad = wworst > 1;
    }
#undef OUT
#undef WTS
    char r2[96], r3[96], a3[96];
    double shown = worst > wworst ? worst : wworst;
    if (problem[0] || worst > 1 || weights_bad) {
        char text[512] = "";
        if (problem[0]) snprintf(text, sizeof text, "%s", problem);
        else if (worst > 1)
            snprintf(text, sizeof text, "worst |output - expected| / atol = %s (atol %s)",
                     to_precision(worst, 3, r3, sizeof r3), to_precision(atol, 3, a3, sizeof a3));
        if (!problem[0] && weights_bad) {
            size_t at = strlen(text);
            snprintf(text + at, sizeof text - at, "%sweights: worst |weights - expected| / weights_atol = %s "
                     "(weights_atol %s)", at ? "; " : "", to_precision(wworst, 3, r3, sizeof r3),
                     to_precision(watol, 3, a3, sizeof a3));
        }
        snprintf(line, llen, "FAIL %s %s: %s", to_precision(shown, 3, r2, sizeof r2), id, text);
        verdict = V_FAIL;
    } else {
        snprintf(line, llen, "pass %s %s", to_precision(shown, 2, r2, sizeof r2), id);
        verdict = V_PASS;
    }
done:
    if (map != MAP_FAILED) munmap(map, maplen);
    case_free(&c);
    return verdict;
}

/* ------------------------------------------------------------------------------------------------------------ */
static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s%s", dir, (*dir && dir[strlen(dir) - 1] == '/') ? "" : "/", name);
    return p;
}

static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("conform: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

int main(int argc, char **argv) {
    double timeout = 30;
    const char *pos[3];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--timeout") == 0) {
            char *end = NULL;
            if (i + 1 >= argc) { fprintf(stderr, "%s\n", USAGE); return 2; }
            timeout = strtod(argv[++i], &end);
            if (end == argv[i] || *end != '\0' || !(timeout > 0) || !isfinite(timeout)) {
                fprintf(stderr, "%s\nconform: --timeout %s: expected a positive number of seconds\n", USAGE, argv[i]);
                return 2;
            }
        } else if (npos < 3) {
            pos[npos++] = argv[i];
        } else {
            npos = 4;
        }
    }
    if (npos != 3) { fprintf(stderr, "%s\n", USAGE); return 2; }
    const char *dir = pos[0], *lib = pos[1], *symbol = pos[2];

    char err[320];
    char *index_path = join(dir, "index.json");
    if (!index_path) return usage_error("out of memory");
    struct stat st;
    if (stat(index_path, &st) != 0)
        return usage_error("%s not found: DIR must be a refimpl export", index_path);
    if (stat(lib, &st) != 0) return usage_error("no file %s", lib);
    size_t len;
    char *text = read_file(index_path, &len, err, sizeof err);
    if (!text) return usage_error("%s: %s", index_path, err);
    jv index;
    if (jparse(text, len, &index, err, sizeof err)) return usage_error("%s: %s", index_path, err);
    free(text);
    const jv *schema = jget(&index, "schema"), *cases = jget(&index, "cases");
    int ok = schema && schema->t == J_STR && strcmp(schema->u.str, "refimpl-export-index/1") == 0 && cases &&
             cases->t == J_ARR;
    for (size_t i = 0; ok && i < cases->n; i++) {
        const jv *e = &cases->u.items[i], *id = jget(e, "id"), *file = jget(e, "file");
        ok = id && id->t == J_STR && file && file->t == J_STR;
    }
    if (!ok)
        return usage_error("%s is not a refimpl export index (schema refimpl-export-index/1, cases [{id, file}])",
                           index_path);
    free(index_path);

    /* the library is loaded here, before any case: a missing one or a missing symbol is exit 2 */
    char *path = realpath(lib, NULL);
    void *handle = dlopen(path ? path : lib, RTLD_NOW | RTLD_LOCAL);
    free(path);
    if (!handle) return usage_error("cannot load the shared library %s: %s", lib, dlerror());
    dlerror();
    void *sym = dlsym(handle, symbol);
    if (!sym)
        return usage_error("%s exports no symbol '%s' (declared extern \"C\"? see refimpl_attention.h)", lib, symbol);
    kernel kn;
    memcpy(&kn.fn, &sym, sizeof kn.fn);
    kn.symbol = symbol;
    kn.timeout = timeout;

    long passed = 0, failed = 0, na = 0;
    static char line[2048];
    for (size_t i = 0; i < cases->n; i++) {
        const jv *e = &cases->u.items[i];
        const char *eid = jget(e, "id")->u.str, *file = jget(e, "file")->u.str;
        char *fp = join(dir, file);
        char *body = NULL;
        jv root;
        if (!fp) snprintf(err, sizeof err, "out of memory");
        else body = read_file(fp, &len, err, sizeof err);
        free(fp);
        if (!body || jparse(body, len, &root, err, sizeof err)) {
            printf("error %s: unreadable case file %s: %s\n", eid, file, err);
            free(body);
            fflush(stdout);
            failed++;
            continue;
        }
        free(body);
        const jv *cid = jget(&root, "id");
        char *id = strdup((cid && cid->t == J_STR) ? cid->u.str : eid);
        if (!id) return usage_error("out of memory");
        line[0] = '\0';
        int v = run_case(&kn, &root, id, line, sizeof line);
        if (v < 0) {
            printf("error %s: malformed case: %s\n", id, why);
            failed++;
        } else {
            printf("%s\n", line);
            if (v == V_PASS) passed++;
            else if (v == V_NA) na++;
            else failed++;
        }
        fflush(stdout);
        free(id);
        jfree(&root);
    }
    jfree(&index);
    printf("%ld passed, %ld failed, %ld n/a\n", passed, failed, na);
    if (passed + failed == 0) {
        printf("RESULT: NOTHING CHECKED\n");
        return 2;
    }
    printf("%s\n", failed == 0 ? "RESULT: all targets conform" : "RESULT: NON-CONFORMANCE");
    return failed == 0 ? 0 : 1;
}
