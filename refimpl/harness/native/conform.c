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
 * The calls run in a fork()ed worker process, as refimpl check's do, each with a time limit (default 30 s): a crash
 * (segfault, abort, exit) is that case's `crash`, a hang its `timeout`, and the next case gets a new worker.
 *
 * Verdicts, as tools/conform.mjs: a non-zero return code is the case's error; an output row with a key must lie
 * within the case's tolerance of the expected float64 output, the bound of the precision the kernel computes in:
 * `atol` for a float64 case; for the others the export's `budget_atol` (`budget_weights_atol`, `budget_slope`):
 * what refimpl check allows in the case's own dtype (an older export without them: `atol_float32` = K_FORWARD *
 * 2^-24 * n_terms * magnitude); a row with no key
 * (dead_rows) may be zeros, NaN or the mean of V; padding rows (absent_rows) are not judged. Weights the kernel
 * wrote (any not NaN) are judged on rows with a key when the case has expected ones (`weights_atol`, or
 * K_FORWARD * 2^-24 * n_terms in float), as `refimpl check` does. Cases the ABI cannot express (additive masks,
 * softcap, ALiBi) are n/a.
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
#include <stddef.h>
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

typedef struct jv {           /* 16 bytes: a case file holds millions of them */
    uint32_t t;
    uint32_t n;               /* string length, number of items, or number of members */
    union {
        double num;
        char *str;            /* NUL-terminated (may also hold NULs: n is the length) */
        struct jv *items;     /* array items; an object's members as 2n items: key (a string), value */
    } u;
} jv;

/* A parsed document: every node and string lives in its arena, freed at once */
typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

typedef struct {
    jv root;
    chunk *arena;
} jdoc;

#define CHUNK (1u << 20)

static chunk *pool;           /* freed chunks of CHUNK bytes, reused: fresh memory costs a page fault per page */

static void jdoc_free(jdoc *d) {
    while (d->arena) {
        chunk *next = d->arena->next;
        if (d->arena->cap == CHUNK) {
            d->arena->next = pool;
            pool = d->arena;
        } else {
            free(d->arena);
        }
        d->arena = next;
    }
    d->root.t = J_NULL;
}

static void *arena_alloc(chunk **arena, size_t size) {
    size = (size + 15) & ~(size_t)15;
    chunk *c = *arena;
    if (c && c->cap - c->used >= size) {
        void *p = (char *)c->data + c->used;
        c->used += size;
        return p;
    }
    size_t cap = size > CHUNK / 4 ? size : CHUNK;
    if (size > SIZE_MAX - sizeof *c) return NULL;
    chunk *n;
    if (cap == CHUNK && pool) {
        n = pool;
        pool = pool->next;
    } else if (!(n = malloc(sizeof *n + cap))) {
        return NULL;
    }
    n->used = size;
    n->cap = cap;
    if (c && cap != CHUNK) {          /* a large block of its own: the current chunk stays the one filled */
        n->next = c->next;
        c->next = n;
    } else {
        n->next = c;
        *arena = n;
    }
    return n->data;
}

typedef struct {
    const char *start, *p, *end;
    int depth;
    chunk **arena;
    jv *stack;                /* the items of the containers being parsed; each is copied out once, when it closes */
    size_t sp, cap;
    char err[256];
} jparser;

#define MAX_DEPTH 200

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

/* at the opening quote: the decoded string, NUL-terminated, in the arena */
static int parse_string(jparser *ps, jv *out) {
    ps->p++;
    const char *q = ps->p;                   /* the decoded string is never longer than its source */
    while (q < ps->end && *q != '"') q += (*q == '\\' && q + 1 < ps->end) ? 2 : 1;
    if ((size_t)(q - ps->p) >= UINT32_MAX) return jerr(ps, "a string of more than 4 GB");
    char *o = arena_alloc(ps->arena, (size_t)(q - ps->p) + 1);
    if (!o) return jerr(ps, "out of memory");
    size_t len = 0;
    for (;;) {
        if (ps->p >= ps->end) return jerr(ps, "an unterminated string");
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') { ps->p++; break; }
        if (c < 0x20) return jerr(ps, "a control character (0x%02x) in a string", c);
        if (c != '\\') { o[len++] = (char)c; ps->p++; continue; }
        ps->p++;
        if (ps->p >= ps->end) return jerr(ps, "an unterminated string");
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
            if (read_hex4(ps, &cp)) return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return jerr(ps, "a lone low surrogate \\u%04X", cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
                    return jerr(ps, "a high surrogate \\u%04X not followed by a low one", cp);
                ps->p += 2;
                if (read_hex4(ps, &lo)) return -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return jerr(ps, "a high surrogate without its low one");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            len += put_utf8(o + len, cp);   /* at most as long as its escape: 6 or 12 bytes */
            break;
        }
        default:
            ps->p--;
            return jerr(ps, "an invalid escape \\%c", e);
        }
    }
    o[len] = '\0';
    out->t = J_STR;
    out->n = (uint32_t)len;
    out->u.str = o;
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
    char buf[512];                           /* strtod on a copy: the text need not end in a NUL */
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

static int push(jparser *ps, const jv *v) {
    if (ps->sp == ps->cap) {
        size_t nc = ps->cap ? ps->cap * 2 : 1024;
        jv *ns = realloc(ps->stack, nc * sizeof *ns);
        if (!ns) return jerr(ps, "out of memory");
        ps->stack = ns;
        ps->cap = nc;
    }
    ps->stack[ps->sp++] = *v;
    return 0;
}

static int parse_container(jparser *ps, jv *out, int obj) {
    char close = obj ? '}' : ']';
    if (++ps->depth > MAX_DEPTH) return jerr(ps, "nesting deeper than %d", MAX_DEPTH);
    ps->p++;
    size_t base = ps->sp, n = 0;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
    } else {
        for (;;) {
            skip_ws(ps);
            jv v = {J_NULL, 0, {0}};
            if (obj) {
                if (ps->p >= ps->end || *ps->p != '"') return jerr(ps, "expected a member name in quotes");
                if (parse_string(ps, &v)) return -1;
                for (size_t i = 0; i < n; i++)
                    if (strcmp(ps->stack[base + 2 * i].u.str, v.u.str) == 0)
                        return jerr(ps, "a duplicate member \"%.60s\"", v.u.str);
                if (push(ps, &v)) return -1;
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':') return jerr(ps, "expected ':'");
                ps->p++;
                skip_ws(ps);
            }
            if (parse_value(ps, &v) || push(ps, &v)) return -1;
            if (++n >= UINT32_MAX) return jerr(ps, "a container of more than 2^32 items");
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
    }
    size_t count = ps->sp - base;
    jv *items = arena_alloc(ps->arena, (count ? count : 1) * sizeof *items);
    if (!items) return jerr(ps, "out of memory");
    if (count) memcpy(items, ps->stack + base, count * sizeof *items);
    ps->sp = base;
    out->t = obj ? J_OBJ : J_ARR;
    out->n = (uint32_t)n;
    out->u.items = items;
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
    case '"': return parse_string(ps, out);
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

/* the whole text: one value and nothing after it (err gets the reason on failure, and doc is empty) */
static int jparse(const char *text, size_t len, jdoc *doc, char *err, size_t errlen) {
    doc->arena = NULL;
    jparser ps = {text, text, text + len, 0, &doc->arena, NULL, 0, 0, ""};
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) ps.p += 3;   /* a UTF-8 byte order mark */
    skip_ws(&ps);
    int rc = parse_value(&ps, &doc->root);
    if (rc == 0) {
        skip_ws(&ps);
        if (ps.p != ps.end) rc = jerr(&ps, "more text after the JSON value");
    }
    free(ps.stack);
    if (rc) {
        jdoc_free(doc);
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
/* A file's bytes, in a buffer reused from file to file (valid until the next call) */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
    static char *buf;
    static size_t cap;
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "%s", strerror(errno)); return NULL; }
    struct stat st;
    size_t want = (fstat(fileno(f), &st) == 0 && st.st_size > 0) ? (size_t)st.st_size + 1 : 1 << 16, n = 0;
    for (;;) {
        if (want > cap) {
            char *nb = realloc(buf, want);
            if (!nb) { fclose(f); snprintf(err, errlen, "out of memory"); return NULL; }
            buf = nb;
            cap = want;
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || ferror(f)) break;
        want = cap * 2;                    /* it grew since fstat, or is not a regular file */
    }
    if (ferror(f)) { snprintf(err, errlen, "%s", strerror(errno ? errno : EIO)); fclose(f); return NULL; }
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
 * Calling the kernel in a worker process
 * ------------------------------------------------------------------------------------------------------------ */
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
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The worker: one child process calls the kernel, case after case, as refimpl check's worker does; a crash or
 * a timeout ends it and the next case gets a new one. The arrays go through a shared mapping (forked again, larger,
 * when a case needs more); a call is a message on one pipe, its return code comes back on another. */
typedef struct {
    int bits, has_keep, has_weights;
    int64_t shape[7];
    double scale;
    size_t off_q, off_k, off_v, off_keep, off_out, off_weights;
} call_msg;

typedef struct {
    refimpl_attention_fn fn;
    const char *symbol;
    double timeout;
    pid_t pid;                                   /* 0: no worker */
    int cmd, res;                                /* the parent's ends of the two pipes */
    char *shm;
    size_t cap;
} worker;

static void worker_stop(worker *w) {
    if (!w->pid) return;
    kill(w->pid, SIGKILL);
    close(w->cmd);
    close(w->res);
    while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR) {}
    w->pid = 0;
}

static int full_io(int fd, void *buf, size_t n, int writing) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = writing ? write(fd, (char *)buf + done, n - done) : read(fd, (char *)buf + done, n - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

static void worker_loop(worker *w, int cmd, int res) {
    call_msg m;
    while (full_io(cmd, &m, sizeof m, 0) == 0) {
        char *s = w->shm;
        int rc = w->fn(m.bits, s + m.off_q, s + m.off_k, s + m.off_v,
                       m.has_keep ? (const unsigned char *)s + m.off_keep : NULL, m.shape, m.scale, s + m.off_out,
                       m.has_weights ? s + m.off_weights : NULL);
        fflush(NULL);                            /* what the kernel printed */
        if (full_io(res, &rc, sizeof rc, 1) != 0) break;
    }
    _exit(0);
}

/* a worker whose shared mapping holds need bytes */
static int worker_ready(worker *w, size_t need, char *detail, size_t dlen) {
    if (w->pid && need <= w->cap) return 0;
    worker_stop(w);
    if (need > w->cap) {
        size_t cap = w->cap ? w->cap : (size_t)16 << 20;
        while (cap < need) cap *= 2;
        if (w->shm) munmap(w->shm, w->cap);
        w->shm = NULL;
        w->cap = 0;
        void *m = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            snprintf(detail, dlen, "harness: cannot map %zu bytes: %s", cap, strerror(errno));
            return -1;
        }
        w->shm = m;
        w->cap = cap;
    }
    int c[2], r[2];
    if (pipe(c) != 0) { snprintf(detail, dlen, "harness: pipe: %s", strerror(errno)); return -1; }
    if (pipe(r) != 0) {
        close(c[0]);
        close(c[1]);
        snprintf(detail, dlen, "harness: pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);                                /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        close(c[0]); close(c[1]); close(r[0]); close(r[1]);
        snprintf(detail, dlen, "harness: fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(c[1]);
        close(r[0]);
        worker_loop(w, c[0], r[1]);
    }
    close(c[0]);
    close(r[1]);
    w->pid = pid;
    w->cmd = c[1];
    w->res = r[0];
    return 0;
}

/* one call (the arrays already in w->shm); *rc: the kernel's return code; detail: why it crashed or timed out */
static int worker_call(worker *w, const call_msg *m, int *rc, char *detail, size_t dlen) {
    if (full_io(w->cmd, (void *)m, sizeof *m, 1) != 0) {     /* it died between calls: a new one, once */
        size_t cap = w->cap;
        worker_stop(w);
        if (worker_ready(w, cap, detail, dlen) != 0) return CALL_HARNESS;
        if (full_io(w->cmd, (void *)m, sizeof *m, 1) != 0) {
            snprintf(detail, dlen, "harness: the worker process takes no call: %s", strerror(errno));
            worker_stop(w);
            return CALL_HARNESS;
        }
    }
    double deadline = now_s() + w->timeout;
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) {
            worker_stop(w);
            snprintf(detail, dlen, "no answer in %g s", w->timeout);
            return CALL_TIMEOUT;
        }
        struct pollfd pfd = {w->res, POLLIN, 0};
        int r = poll(&pfd, 1, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR) {
            snprintf(detail, dlen, "harness: poll: %s", strerror(errno));
            worker_stop(w);
            return CALL_HARNESS;
        }
        if (r > 0) break;
    }
    if (full_io(w->res, rc, sizeof *rc, 0) == 0) return CALL_OK;
    int status = 0;                              /* no answer: the worker is gone (or closed its end) */
    close(w->cmd);
    close(w->res);
    pid_t pid = w->pid;
    w->pid = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) break;
        if (now_s() >= deadline) {               /* alive without its pipe past the limit */
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
            snprintf(detail, dlen, "no answer in %g s", w->timeout);
            return CALL_TIMEOUT;
        }
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    if (WIFSIGNALED(status)) {
        const char *name = signal_name(WTERMSIG(status));
        if (name) snprintf(detail, dlen, "killed by %s", name);
        else snprintf(detail, dlen, "killed by signal %d", WTERMSIG(status));
    } else {
        snprintf(detail, dlen, "the kernel ended the process (exit code %d) instead of returning",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    return CALL_CRASH;
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

static int known_dtype(const char *dtype) {
    return !strcmp(dtype, "float64") || !strcmp(dtype, "float32") || !strcmp(dtype, "float16") ||
           !strcmp(dtype, "bfloat16");
}

typedef struct {
    array q, k, v, keep, out, dead, absent, weights;
    double *mean;
} case_arrays;

static void case_free(case_arrays *c) {
    array *all[] = {&c->q, &c->k, &c->v, &c->keep, &c->out, &c->dead, &c->absent, &c->weights};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) array_free(all[i]);
    free(c->mean);
}

static size_t put(char *shm, size_t at, const array *a, int f64) {    /* a's values from at, as the ABI's type */
    if (f64) memcpy(shm + at, a->d, a->n * sizeof(double));
    else for (size_t i = 0; i < a->n; i++) ((float *)(shm + at))[i] = (float)a->d[i];
    return at;
}

static double ratio_of(double got, double want, double atol) {
    double d = fabs(got - want);
    if (isnan(d)) return INFINITY;
    return atol > 0 ? d / atol : (d == 0 ? 0 : INFINITY);
}

/* Judges the case in root (freed before the call: the fork then copies less); writes its line in line (id: the
 * case's own, not in root). Returns its verdict, or -1 when malformed (why says why). */
static int run_case(worker *kn, jdoc *doc, const char *id, char *line, size_t llen) {
    const jv *root = &doc->root;
    case_arrays c;
    memset(&c, 0, sizeof c);
    int verdict = -1;
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
    if (!known_dtype(dtype)) return bad("features.dtype \"%.40s\" is none of float64, float32, float16, bfloat16", dtype);
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

    /* the bound of the precision the kernel computes in: a float64 case's atol and weights_atol; every other case
     * is passed as float (float16/bfloat16 values are exact in it), so float32's: atol_float32, the forward bound
     * K_FORWARD * 2^-24 * n_terms * magnitude (computed from those fields, in that order, where the file has no
     * atol_float32), and K_FORWARD * 2^-24 * n_terms for the weights */
    double atol, watol = 0, kf = 0, nt = 0, mag = 0, slope = -1;   /* slope < 0: no slope rule */
    const double u32 = ldexp(1.0, -24);
    if (f64) {
        if (get_number(tl, "tolerance", "atol", &atol)) goto done;
        if (c.weights.present && get_number(tl, "tolerance", "weights_atol", &watol)) goto done;
    } else {
        if (get_number(tl, "tolerance", "K_FORWARD", &kf) || get_number(tl, "tolerance", "n_terms", &nt)) goto done;
        if (jget(tl, "budget_atol")) {                  /* refimpl check's own allowance for this dtype */
            if (get_number(tl, "tolerance", "budget_atol", &atol)) goto done;
        } else if (jget(tl, "atol_float32")) {
            if (get_number(tl, "tolerance", "atol_float32", &atol)) goto done;
        } else {
            if (get_number(tl, "tolerance", "magnitude", &mag)) goto done;
            atol = kf * u32 * nt * mag;
        }
        watol = kf * u32 * nt;
        if (jget(tl, "budget_weights_atol") && get_number(tl, "tolerance", "budget_weights_atol", &watol)) goto done;
        const jv *sl = jget(tl, "budget_slope");
        if (sl && sl->t == J_NUM) slope = sl->u.num;
    }
    if (!(atol >= 0) || isinf(atol) || !(watol >= 0) || isinf(watol)) {
        bad("tolerance: a bound that is not a finite non-negative number");
        goto done;
    }

    /* the call: buffers as refimpl's c-abi passes them, in the worker's shared mapping */
    size_t esize = f64 ? sizeof(double) : sizeof(float);
    size_t n_out = c.out.n, n_w = c.weights.present ? c.weights.n : 0;
    call_msg m = {f64 ? 64 : 32, c.keep.present, n_w > 0, {B, Hq, Hkv, Sq, Sk, D, Dv}, scale, 0, 0, 0, 0, 0, 0};
#define NEXT(at, bytes) (((at) + (bytes) + 63) / 64 * 64)
    m.off_k = NEXT(m.off_q, c.q.n * esize);
    m.off_v = NEXT(m.off_k, c.k.n * esize);
    m.off_keep = NEXT(m.off_v, c.v.n * esize);
    m.off_out = NEXT(m.off_keep, c.keep.n);
    m.off_weights = NEXT(m.off_out, n_out * esize);
    size_t need = NEXT(m.off_weights, n_w * esize);
#undef NEXT
    char detail[256];
    jdoc_free(doc);                              /* everything needed is in c */
    if (worker_ready(kn, need, detail, sizeof detail) != 0) {
        snprintf(line, llen, "error %s: %s", id, detail);
        verdict = V_ERROR;
        goto done;
    }
    put(kn->shm, m.off_q, &c.q, f64);
    put(kn->shm, m.off_k, &c.k, f64);
    put(kn->shm, m.off_v, &c.v, f64);
    if (c.keep.present) memcpy(kn->shm + m.off_keep, c.keep.b, c.keep.n);
    void *out = kn->shm + m.off_out, *wbuf = n_w ? kn->shm + m.off_weights : NULL;
    for (size_t i = 0; i < n_out; i++) {
        if (f64) ((double *)out)[i] = NAN; else ((float *)out)[i] = NAN;
    }
    for (size_t i = 0; i < n_w; i++) {
        if (f64) ((double *)wbuf)[i] = NAN; else ((float *)wbuf)[i] = NAN;
    }
    int rc = 0, how = worker_call(kn, &m, &rc, detail, sizeof detail);
    if (how == CALL_HARNESS) { snprintf(line, llen, "error %s: %s", id, detail); verdict = V_ERROR; goto done; }
    if (how == CALL_CRASH) { snprintf(line, llen, "crash %s: %s", id, detail); verdict = V_CRASH; goto done; }
    if (how == CALL_TIMEOUT) { snprintf(line, llen, "timeout %s: %s", id, detail); verdict = V_TIMEOUT; goto done; }
    if (rc != 0) {
        snprintf(line, llen, "error %s: the kernel %s returned error code %d", id, kn->symbol, rc);
        verdict = V_ERROR;
        goto done;
    }

    /* the verdict, as conform.mjs: rows with a key within atol; rows with none zeros, NaN or mean of V */
#define OUT(i) (f64 ? ((const double *)out)[i] : (double)((const float *)out)[i])
#define WTS(i) (f64 ? ((const double *)wbuf)[i] : (double)((const float *)wbuf)[i])
    size_t rows = (size_t)(B * Hq * Sq), dv = (size_t)Dv, sk = (size_t)Sk;
    double worst = 0, wworst = 0, so = 0, ss = 0;
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
            so += OUT(o0 + e) * c.out.d[o0 + e];
            ss += c.out.d[o0 + e] * c.out.d[o0 + e];
        }
    }
    double k_slope = ss == 0 ? 1.0 : so / ss;          /* the least-squares slope of the output on the expected */
    if (!problem[0] && slope >= 0 && !(fabs(k_slope - 1) <= slope)) {
        snprintf(problem, sizeof problem, "scaled by %.6g against the expected output (its least-squares slope); "
                 "rounding allows 1 +- %.3g", k_slope, slope);
        if (fabs(k_slope - 1) / slope > worst) worst = fabs(k_slope - 1) / slope;
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
    jdoc index;
    if (!text) return usage_error("%s: %s", index_path, err);
    if (jparse(text, len, &index, err, sizeof err)) return usage_error("%s: %s", index_path, err);
    const jv *schema = jget(&index.root, "schema"), *cases = jget(&index.root, "cases");
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
    worker kn = {NULL, symbol, timeout, 0, -1, -1, NULL, 0};
    memcpy(&kn.fn, &sym, sizeof kn.fn);
    signal(SIGPIPE, SIG_IGN);                    /* a worker that died is seen as such, not as our own death */

    long passed = 0, failed = 0, na = 0;
    static char line[2048];
    for (size_t i = 0; i < cases->n; i++) {
        const jv *e = &cases->u.items[i];
        const char *eid = jget(e, "id")->u.str, *file = jget(e, "file")->u.str;
        char *fp = join(dir, file);
        jdoc doc;
        text = fp ? read_file(fp, &len, err, sizeof err) : (snprintf(err, sizeof err, "out of memory"), NULL);
        free(fp);
        if (!text || jparse(text, len, &doc, err, sizeof err)) {
            printf("error %s: unreadable case file %s: %s\n", eid, file, err);
            fflush(stdout);
            failed++;
            continue;
        }
        const jv *cid = jget(&doc.root, "id");
        char *id = strdup((cid && cid->t == J_STR) ? cid->u.str : eid);
        if (!id) return usage_error("out of memory");
        line[0] = '\0';
        int v = run_case(&kn, &doc, id, line, sizeof line);
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
        jdoc_free(&doc);
    }
    jdoc_free(&index);
    worker_stop(&kn);
    printf("%ld passed, %ld failed, %ld n/a\n", passed, failed, na);
    if (passed + failed == 0) {
        printf("RESULT: NOTHING CHECKED\n");
        return 2;
    }
    printf("%s\n", failed == 0 ? "RESULT: all targets conform" : "RESULT: NON-CONFORMANCE");
    return failed == 0 ? 0 : 1;
}
