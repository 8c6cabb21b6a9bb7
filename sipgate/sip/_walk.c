/*
 * sipgate.sip._walk: the fast path's two header walks, in C.
 *
 * fields(data, max_lines, max_line) is sipgate.sip.fast._fields_loop and
 * response_walk(data, max_lines, max_line) the walk at the start of
 * _relay_response_loop (fast._response_walk_loop), value for value: the
 * framing checked (every line ends in CRLF, no other CR, LF or NUL), each
 * header name classified, the values the fast path reads sliced out.
 * Compiled by mypyc, those walks index the datagram one byte at a time
 * through bounds-checked calls and were a quarter of the instructions of
 * an admitted request and two thirds of a relayed response
 * (benchmarks/README.md, "Admitted calls"); here a byte is a load and a
 * compare.  What to do with the fields stays in fast.py.
 *
 * The header-name tables are fast.py's own (_T_TOKEN, _COMPACT_SLOTS,
 * _LONG_SLOTS), handed over once by configure(): one definition of which
 * names the scan reads.  Built by `sipgate native build` with the mypyc
 * group and covered by the same freshness guard (sipgate/native.py);
 * tests/sip/test_fast_grammar.py holds both walks to the Python ones on
 * generated and damaged messages.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

/* Slots as in fast._SLOTS: 0..7 values, -1 Via, -2 not read, -3 Proxy-Require. */
#define VIA (-1)
#define NOT_READ (-2)
#define PROXY_REQUIRE (-3)
#define LONG_KEYS (16 << 5)

static unsigned char token[256];          /* _T_TOKEN */
/* The value grammars' classes: _T_LABEL, _T_USER, _T_URI_PARAM, _T_SCHEME, _T_ADDR_SPEC */
static unsigned char label[256], user[256], uri_param[256], scheme[256], addr_spec[256];
/* INVITE, ACK, BYE, CANCEL as bytes objects (the method scan() returns). */
static PyObject *method_objects[4];
static const char *const METHOD_NAMES[4] = {"INVITE", "ACK", "BYE", "CANCEL"};
static signed char compact[256];          /* _COMPACT_SLOTS - 2 */
static struct {
    unsigned char length;                 /* 0: no name with this key */
    signed char slot;
    unsigned char name[16];
} names[LONG_KEYS];                       /* _LONG_SLOTS */
static int configured;

static PyObject *
configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const int classes[] = {0, 1, 3, 4, 5, 6, 7};  /* (the bytes[256] arguments) */
    int ok = nargs == 8 && PyTuple_Check(args[2]) && PyTuple_GET_SIZE(args[2]) == LONG_KEYS;
    for (int x = 0; ok && x < 7; x++)
        ok = PyBytes_Check(args[classes[x]]) && PyBytes_GET_SIZE(args[classes[x]]) == 256;
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "configure(token, compact, long: tuple[512], label, user, uri_param, "
                                         "scheme, addr_spec): bytes[256] but long");
        return NULL;
    }
    unsigned char *targets[5] = {label, user, uri_param, scheme, addr_spec};
    for (int x = 0; x < 5; x++) {
        const unsigned char *from = (const unsigned char *)PyBytes_AS_STRING(args[3 + x]);
        for (int i = 0; i < 256; i++)
            targets[x][i] = from[i] != 0;
    }
    for (int m = 0; m < 4; m++) {
        if (method_objects[m] == NULL && (method_objects[m] = PyBytes_FromString(METHOD_NAMES[m])) == NULL)
            return NULL;
    }
    const unsigned char *t = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const unsigned char *c = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    for (int i = 0; i < 256; i++) {
        token[i] = t[i] != 0;
        compact[i] = (signed char)(c[i] - 2);
    }
    for (Py_ssize_t key = 0; key < LONG_KEYS; key++) {
        PyObject *entry = PyTuple_GET_ITEM(args[2], key);
        names[key].length = 0;
        if (entry == Py_None)
            continue;
        PyObject *name;
        long slot;
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 || !PyBytes_Check(name = PyTuple_GET_ITEM(entry, 0))
            || PyBytes_GET_SIZE(name) != key >> 5 || PyBytes_GET_SIZE(name) == 0) {
            PyErr_SetString(PyExc_ValueError, "configure: a long-name entry is not (name of its length, slot)");
            return NULL;
        }
        slot = PyLong_AsLong(PyTuple_GET_ITEM(entry, 1));
        if (slot == -1 && PyErr_Occurred())
            return NULL;
        names[key].length = (unsigned char)PyBytes_GET_SIZE(name);
        names[key].slot = (signed char)slot;
        memcpy(names[key].name, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
    }
    configured = 1;
    Py_RETURN_NONE;
}

/* Offset of the CRLF ending the line that holds ``i``; -1 for a bare CR,
 * an LF or a NUL before it, or no CRLF before ``n`` (fast._line_end). */
static Py_ssize_t
line_end(const unsigned char *d, Py_ssize_t i, Py_ssize_t n)
{
    if (i >= n)
        return -1;
    /* (libc's memchr reads a line in a few wide steps) */
    const unsigned char *cr = memchr(d + i, '\r', (size_t)(n - i));
    Py_ssize_t stop = cr ? cr - d : n;
    if (memchr(d + i, '\n', (size_t)(stop - i)) || memchr(d + i, 0, (size_t)(stop - i)) || cr == NULL)
        return -1;
    return stop + 1 < n && d[stop + 1] == 10 ? stop : -1;
}

/* Offset of the colon after a token name at ``pos``, or -1 (fast._colon). */
static Py_ssize_t
colon_at(const unsigned char *d, Py_ssize_t pos, Py_ssize_t n)
{
    Py_ssize_t k = pos;
    while (k < n && token[d[k]])
        k++;
    return k > pos && k < n && d[k] == ':' ? k : -1;
}

/* The slot of the name d[start:stop] (fast._name_slot). */
static int
name_slot(const unsigned char *d, Py_ssize_t start, Py_ssize_t stop)
{
    Py_ssize_t length = stop - start;
    if (length == 1)
        return compact[d[start]];
    if (length >= 16)
        return NOT_READ;
    int key = (int)(length << 5 | (d[start] & 31));
    if (names[key].length != length)
        return NOT_READ;
    for (Py_ssize_t x = 0; x < length; x++) {
        unsigned char c = d[start + x];
        if (c >= 'A' && c <= 'Z')
            c |= 32;
        if (c != names[key].name[x])
            return NOT_READ;
    }
    return names[key].slot;
}

/* The line with its colon at ``colon`` and end at ``end`` is "Name: value"
 * with no blank at either end of the value (fast._rendered). */
static int
rendered(const unsigned char *d, Py_ssize_t colon, Py_ssize_t end)
{
    if (colon + 2 >= end || d[colon + 1] != ' ')
        return 0;
    unsigned char c = d[colon + 2], last = d[end - 1];
    return c != ' ' && c != '\t' && last != ' ' && last != '\t';
}

/* d[a:b] without blanks at either end, as bounds (fast._trimmed). */
static void
trim(const unsigned char *d, Py_ssize_t *a, Py_ssize_t *b)
{
    while (*a < *b && (d[*a] == ' ' || d[*a] == '\t'))
        (*a)++;
    while (*b > *a && (d[*b - 1] == ' ' || d[*b - 1] == '\t'))
        (*b)--;
}

static int
same(PyObject *bytes, const unsigned char *p, Py_ssize_t length)
{
    return PyBytes_GET_SIZE(bytes) == length && memcmp(PyBytes_AS_STRING(bytes), p, (size_t)length) == 0;
}

static int
arguments(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t count, Py_ssize_t *max_lines, Py_ssize_t *max_line)
{
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "sipgate.sip._walk: configure() first");
        return -1;
    }
    if (nargs != count || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "expected (data: bytes, max_lines: int, max_line: int, ...)");
        return -1;
    }
    *max_lines = PyLong_AsSsize_t(args[1]);
    if (*max_lines == -1 && PyErr_Occurred())
        return -1;
    *max_line = PyLong_AsSsize_t(args[2]);
    if (*max_line == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* (end, line0, vias, values, at) as a tuple that takes the five
 * references; NULL (and each released) when one is NULL or memory runs out. */
static PyObject *
tuple5(PyObject *end, PyObject *line0, PyObject *vias, PyObject *values, PyObject *at)
{
    PyObject *items[5] = {end, line0, vias, values, at};
    PyObject *t = end && line0 && vias && values && at ? PyTuple_New(5) : NULL;
    for (int x = 0; x < 5; x++) {
        if (t != NULL)
            PyTuple_SET_ITEM(t, x, items[x]);
        else
            Py_XDECREF(items[x]);
    }
    return t;
}

#define REFUSE do { result = Py_None; Py_INCREF(result); goto done; } while (0)

/* What the request walk found: the values of the slots it reads (owned
 * references or NULL), the Via values (a list), line indexes as fast.AT
 * (at[9]: no indexes), the offset of the empty line and the length of the
 * start line. */
typedef struct {
    PyObject *values[8];
    PyObject *vias;
    Py_ssize_t at[10];
    Py_ssize_t end;
    Py_ssize_t line0;
} Walked;

static void
walked_clear(Walked *w)
{
    for (int s = 0; s < 8; s++)
        Py_CLEAR(w->values[s]);
    Py_CLEAR(w->vias);
}

/* fast._fields_loop into ``w``: 1 walked, 0 refused (the full path's
 * business), -1 with an exception set.  ``w`` is released by the caller
 * (walked_clear) whatever the answer. */
static int
walk_fields(const unsigned char *d, Py_ssize_t n, Py_ssize_t max_lines, Py_ssize_t max_line, Walked *w)
{
    memset(w, 0, sizeof(*w));
    Py_ssize_t i = line_end(d, 0, n);
    if (i < 0 || i > max_line)
        return 0;
    if ((w->vias = PyList_New(0)) == NULL)
        return -1;
    Py_ssize_t pos = i + 2, lineno = 0;
    int normal = 1;  /* every line so far rendered */
    while (pos + 1 >= n || d[pos] != 13 || d[pos + 1] != 10) {
        if (++lineno >= max_lines)
            return 0;
        Py_ssize_t k = colon_at(d, pos, n);
        if (k < 0)
            return 0;
        Py_ssize_t e = line_end(d, k + 1, n);
        if (e < 0 || e - pos > max_line)
            return 0;
        int slot = name_slot(d, pos, k);
        if (slot == PROXY_REQUIRE)
            return 0;
        /* (the lines a relay rewrites do not count: Max-Forwards,
         * Content-Length, the first Via) */
        if (normal && slot != 4 && slot != 5 && (slot != VIA || PyList_GET_SIZE(w->vias)))
            normal = rendered(d, k, e);
        if (slot != NOT_READ) {
            Py_ssize_t a = k + 1, b = e;
            trim(d, &a, &b);
            if (a == b)
                return 0;
            const unsigned char *v = d + a;
            if (slot == VIA) {
                if (memchr(v, ',', (size_t)(b - a)))
                    return 0;
                if (PyList_GET_SIZE(w->vias) == 0)
                    w->at[8] = lineno;
                PyObject *value = PyBytes_FromStringAndSize((const char *)v, b - a);
                if (value == NULL || PyList_Append(w->vias, value) < 0) {
                    Py_XDECREF(value);
                    return -1;
                }
                Py_DECREF(value);
            } else if (w->values[slot] == NULL) {
                if (slot >= 6 && memchr(v, ',', (size_t)(b - a)))
                    return 0;  /* (a Route or Record-Route list: the full path's) */
                if ((w->values[slot] = PyBytes_FromStringAndSize((const char *)v, b - a)) == NULL)
                    return -1;
                w->at[slot] = lineno;
            } else if (slot < 6 && !same(w->values[slot], v, b - a)) {
                return 0;  /* conflicting single-valued headers */
            } else {
                w->at[9] = 1;  /* a header twice: no line indexes */
            }
        }
        pos = e + 2;
    }
    if (!normal)
        w->at[9] = 1;
    w->end = pos - 2;
    w->line0 = i;
    return 1;
}

/* A new list of ``count`` items: each value or None (references added). */
static PyObject *
value_list(PyObject *const *values, int count)
{
    PyObject *list = PyList_New(count);
    if (list == NULL)
        return NULL;
    for (int s = 0; s < count; s++) {
        PyObject *v = values[s] ? values[s] : Py_None;
        Py_INCREF(v);
        PyList_SET_ITEM(list, s, v);
    }
    return list;
}

/* The line indexes as a list of ints. */
static PyObject *
at_list(const Py_ssize_t at[10])
{
    PyObject *list = PyList_New(10);
    if (list == NULL)
        return NULL;
    for (int s = 0; s < 10; s++) {
        PyObject *x = PyLong_FromSsize_t(at[s]);
        if (x == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, s, x);
    }
    return list;
}

PyDoc_STRVAR(fields_doc,
"fields(data, max_lines, max_line) -> (end, line0, vias, values, at) | None\n\n"
"sipgate.sip.fast._fields_loop with max_lines = min(_MAX_LINES, max_headers + 1)\n"
"and max_line = max_header_line.");

static PyObject *
fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max_lines, max_line;
    if (arguments(args, nargs, 3, &max_lines, &max_line) < 0)
        return NULL;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Walked w;
    int found = walk_fields(d, PyBytes_GET_SIZE(args[0]), max_lines, max_line, &w);
    PyObject *result = NULL;
    if (found == 0) {
        result = Py_None;
        Py_INCREF(result);
    } else if (found > 0) {
        PyObject *vias = w.vias;
        w.vias = NULL;
        result = tuple5(PyLong_FromSsize_t(w.end), PyBytes_FromStringAndSize((const char *)d, w.line0), vias,
                        value_list(w.values, 8), at_list(w.at));
    }
    walked_clear(&w);
    return result;
}

/* -- The value grammars (fast.py's byte loops, one for one) ----------------- */

/* End of the host (labels joined by single dots) at ``i``; -1 for none. */
static Py_ssize_t
host_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t start = i;
    while (i < n && label[p[i]])
        i++;
    if (i == start)
        return -1;
    while (i + 1 < n && p[i] == '.' && label[p[i + 1]]) {
        i++;
        while (i < n && label[p[i]])
            i++;
    }
    return i;
}

/* After ":" and 1-5 digits at ``i``: its end; ``i`` without ":"; -1. */
static Py_ssize_t
port_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n)
{
    if (i >= n || p[i] != ':')
        return i;
    Py_ssize_t j = i + 1;
    while (j < n && p[j] >= '0' && p[j] <= '9')
        j++;
    if (j == i + 1 || j - i - 1 > 5)
        return -1;
    return j;
}

/* End of (;token[=token])* from ``i``. */
static Py_ssize_t
token_params_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n)
{
    while (i < n && p[i] == ';') {
        Py_ssize_t j = i + 1;
        while (j < n && token[p[j]])
            j++;
        if (j == i + 1)
            return i;
        if (j < n && p[j] == '=') {
            Py_ssize_t k = j + 1;
            while (k < n && token[p[k]])
                k++;
            if (k == j + 1)
                return i;
            j = k;
        }
        i = j;
    }
    return i;
}

/* Which of INVITE, ACK, BYE, CANCEL p[0:n] is, or -1. */
static int
method_index(const unsigned char *p, Py_ssize_t n)
{
    for (int m = 0; m < 4; m++)
        if ((size_t)n == strlen(METHOD_NAMES[m]) && memcmp(p, METHOD_NAMES[m], (size_t)n) == 0)
            return m;
    return -1;
}

/* fast._request_line_loop: 1 with the method index, the host's bounds
 * and the port's (*port_a == *port_b: none), else 0. */
static int
request_line(const unsigned char *p, Py_ssize_t n, int *method, Py_ssize_t *host_a, Py_ssize_t *host_b,
             Py_ssize_t *port_a, Py_ssize_t *port_b)
{
    if (n < 16 || memcmp(p + n - 8, " SIP/2.0", 8) != 0)
        return 0;
    n -= 8;
    Py_ssize_t space = -1;
    for (Py_ssize_t k = 0; k < 7 && k < n; k++) {
        if (p[k] == ' ') {
            space = k;
            break;
        }
    }
    if (space < 0 || (*method = method_index(p, space)) < 0)
        return 0;
    Py_ssize_t i = space + 1;
    if (n - i >= 4 && memcmp(p + i, "sip:", 4) == 0)
        i += 4;
    else if (n - i >= 5 && memcmp(p + i, "sips:", 5) == 0)
        i += 5;
    else
        return 0;
    Py_ssize_t j = i;
    while (j < n && user[p[j]])
        j++;
    if (j > i && j < n && p[j] == '@')
        i = j + 1;
    Py_ssize_t h = host_end(p, i, n);
    if (h < 0)
        return 0;
    Py_ssize_t e = port_end(p, h, n);
    if (e < 0)
        return 0;
    for (Py_ssize_t k = e; k < n;) {
        if (p[k] != ';')
            return 0;
        j = k + 1;
        while (j < n && uri_param[p[j]])
            j++;
        if (j == k + 1)
            return 0;
        if (j < n && p[j] == '=') {
            j++;
            while (j < n && uri_param[p[j]])
                j++;
        }
        k = j;
    }
    *host_a = i;
    *host_b = h;
    *port_a = e > h ? h + 1 : e;
    *port_b = e;
    return 1;
}

/* fast._via_loop: 1 with host end, port bounds (equal: none) and the
 * parameters' start (they run to the end), else 0.  The host starts at 12. */
static int
via(const unsigned char *p, Py_ssize_t n, Py_ssize_t *host_b, Py_ssize_t *port_a, Py_ssize_t *port_b)
{
    if (n < 12 || memcmp(p, "SIP/2.0/UDP ", 12) != 0)
        return 0;
    Py_ssize_t h = host_end(p, 12, n);
    if (h < 0)
        return 0;
    Py_ssize_t e = port_end(p, h, n);
    if (e < 0 || token_params_end(p, e, n) != n)
        return 0;
    *host_b = h;
    *port_a = e > h ? h + 1 : e;
    *port_b = e;
    return 1;
}

/* fast._name_addr_loop: the offset its parameters start at (they run to
 * the end), or -1. */
static Py_ssize_t
name_addr(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    if (n && p[0] == '"') {
        i = 1;
        while (i < n && p[i] != '"') {
            if (p[i] == '\\')
                return -1;
            i++;
        }
        if (i == n)
            return -1;
        i++;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
    } else if (n && token[p[0]]) {
        for (;;) {
            while (i < n && token[p[i]])
                i++;
            Py_ssize_t blank = i;
            while (i < n && (p[i] == ' ' || p[i] == '\t'))
                i++;
            if (i == blank || i == n || !token[p[i]])
                break;
        }
    }
    if (i + 1 >= n || p[i] != '<' || (p[i + 1] | 32) < 'a' || (p[i + 1] | 32) > 'z')
        return -1;
    i += 2;
    while (i < n && scheme[p[i]])
        i++;
    if (i >= n || p[i] != ':')
        return -1;
    i++;
    while (i < n && addr_spec[p[i]])
        i++;
    if (i >= n || p[i] != '>')
        return -1;
    i++;
    if (token_params_end(p, i, n) != n)
        return -1;
    return i;
}

/* fast._uint: the value of 1-10 ASCII digits, or -1. */
static long long
uint_value(const unsigned char *p, Py_ssize_t n)
{
    if (n == 0 || n > 10)
        return -1;
    long long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* fast._param_loop over p[0:n] for ``name`` (lower case): 1 found (with
 * the value's bounds, or *va = -1 without "="), 0 not. */
static int
param(const unsigned char *p, Py_ssize_t n, const char *name, Py_ssize_t *va, Py_ssize_t *vb)
{
    Py_ssize_t m = (Py_ssize_t)strlen(name);
    for (Py_ssize_t i = 0; i < n;) {
        Py_ssize_t j = i + 1, k = j;  /* (p[i] is ";") */
        while (k < n && p[k] != ';' && p[k] != '=')
            k++;
        if (k - j == m) {
            Py_ssize_t x = 0;
            for (; x < m; x++) {
                unsigned char c = p[j + x];
                if (c >= 'A' && c <= 'Z')
                    c |= 32;
                if (c != (unsigned char)name[x])
                    break;
            }
            if (x == m) {
                if (k < n && p[k] == '=') {
                    Py_ssize_t e = k + 1;
                    while (e < n && p[e] != ';')
                        e++;
                    *va = k + 1;
                    *vb = e;
                } else {
                    *va = *vb = -1;
                }
                return 1;
            }
        }
        while (k < n && p[k] != ';')
            k++;
        i = k;
    }
    return 0;
}

/* A parameter's value as fast.scan keeps it: bytes, or None when absent,
 * without "=" or (``empty_is_none``) empty. */
static PyObject *
param_value(const unsigned char *p, Py_ssize_t n, const char *name, int empty_is_none)
{
    Py_ssize_t a, b;
    if (!param(p, n, name, &a, &b) || a < 0 || (empty_is_none && a == b))
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)p + a, b - a);
}

/* p[a:b] (letters, digits, "-" and ".") lowered, as a str. */
static PyObject *
lowered(const unsigned char *p, Py_ssize_t a, Py_ssize_t b)
{
    PyObject *out = PyUnicode_New(b - a, 127);
    if (out == NULL)
        return NULL;
    Py_UCS1 *q = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = a; i < b; i++)
        q[i - a] = (Py_UCS1)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] | 32 : p[i]);
    return out;
}

#define MAX_CSEQ 2147483647LL

PyDoc_STRVAR(scan_doc,
"scan(data, max_lines, max_line, max_uri, max_vias) -> tuple | None\n\n"
"sipgate.sip.fast.scan (the compiled build's) in one call: the 21 fields of\n"
"fast.Scanned, or None for the full path.");

static PyObject *
scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max_lines, max_line;
    if (arguments(args, nargs, 5, &max_lines, &max_line) < 0)
        return NULL;
    Py_ssize_t max_uri = PyLong_AsSsize_t(args[3]), max_vias = PyLong_AsSsize_t(args[4]);
    if ((max_uri == -1 || max_vias == -1) && PyErr_Occurred())
        return NULL;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Walked w;
    PyObject *result = NULL;
    PyObject *items[21] = {NULL};
    int found = walk_fields(d, n, max_lines, max_line, &w);
    if (found < 0)
        goto done;
    if (found == 0)
        goto refuse;
    int method;
    Py_ssize_t host_a, host_b, port_a, port_b;
    if (!request_line(d, w.line0, &method, &host_a, &host_b, &port_a, &port_b))
        goto refuse;
    if (w.line0 - (Py_ssize_t)strlen(METHOD_NAMES[method]) - 9 > max_uri)
        goto refuse;  /* (the full parser answers 414) */
    if (port_b > port_a && uint_value(d + port_a, port_b - port_a) > 65535)
        goto refuse;
    PyObject *from = w.values[0], *to = w.values[1], *call_id = w.values[2], *cseq = w.values[3];
    Py_ssize_t vias = PyList_GET_SIZE(w.vias);
    if (!vias || !from || !to || !call_id || !cseq || vias > max_vias)
        goto refuse;
    /* CSeq: 1-10 digits, blanks, the request's method (fast._cseq_loop) */
    const unsigned char *c = (const unsigned char *)PyBytes_AS_STRING(cseq);
    Py_ssize_t cn = PyBytes_GET_SIZE(cseq), digits = 0;
    while (digits < cn && c[digits] >= '0' && c[digits] <= '9')
        digits++;
    if (digits == 0 || digits > 10)
        goto refuse;
    Py_ssize_t word = digits;
    while (word < cn && (c[word] == ' ' || c[word] == '\t'))
        word++;
    if (word == digits || method_index(c + word, cn - word) != method)
        goto refuse;
    long long number = uint_value(c, digits);
    if (number > MAX_CSEQ)
        goto refuse;
    long long max_forwards = -2, length = -2;  /* (-2: absent) */
    if (w.values[4]) {
        max_forwards = uint_value((const unsigned char *)PyBytes_AS_STRING(w.values[4]), PyBytes_GET_SIZE(w.values[4]));
        if (max_forwards < 0)
            goto refuse;
    }
    if (w.values[5]) {
        length = uint_value((const unsigned char *)PyBytes_AS_STRING(w.values[5]), PyBytes_GET_SIZE(w.values[5]));
        if (length < 0 || n - w.end - 4 < length)
            goto refuse;
    }
    PyObject *top = PyList_GET_ITEM(w.vias, 0);
    const unsigned char *v = (const unsigned char *)PyBytes_AS_STRING(top);
    Py_ssize_t vn = PyBytes_GET_SIZE(top), via_host_b, via_port_a, via_port_b;
    const unsigned char *tp = (const unsigned char *)PyBytes_AS_STRING(to);
    const unsigned char *fp = (const unsigned char *)PyBytes_AS_STRING(from);
    Py_ssize_t tn = PyBytes_GET_SIZE(to), fn = PyBytes_GET_SIZE(from);
    Py_ssize_t to_params = name_addr(tp, tn), from_params = name_addr(fp, fn);
    if (!via(v, vn, &via_host_b, &via_port_a, &via_port_b) || to_params < 0 || from_params < 0)
        goto refuse;
    long long via_port = -2;
    if (via_port_b > via_port_a) {
        via_port = uint_value(v + via_port_a, via_port_b - via_port_a);
        if (via_port > 65535)
            goto refuse;
    }
    const unsigned char *vp = v + via_port_b;  /* (the Via's parameters) */
    Py_ssize_t vpn = vn - via_port_b, ra, rb;
    int has_rport = param(vp, vpn, "rport", &ra, &rb);
    items[0] = method_objects[method];
    Py_INCREF(items[0]);
    items[1] = lowered(d, host_a, host_b);
    items[2] = param_value(tp + to_params, tn - to_params, "tag", 1);
    items[3] = param_value(fp + from_params, fn - from_params, "tag", 1);
    items[4] = param_value(vp, vpn, "branch", 0);
    if (via_port >= 0) {
        items[5] = PyLong_FromLongLong(via_port);
    } else {
        items[5] = Py_None;
        Py_INCREF(Py_None);
    }
    if (!has_rport) {
        items[6] = Py_None;
        Py_INCREF(Py_None);
    } else {
        items[6] = ra < 0 ? PyBytes_FromStringAndSize(NULL, 0) : PyBytes_FromStringAndSize((const char *)vp + ra, rb - ra);
    }
    items[7] = call_id;
    items[8] = PyLong_FromLongLong(number);
    items[9] = w.vias;
    items[10] = from;
    items[11] = to;
    items[12] = cseq;
    Py_INCREF(call_id);
    Py_INCREF(w.vias);
    Py_INCREF(from);
    Py_INCREF(to);
    Py_INCREF(cseq);
    items[13] = max_forwards >= 0 ? PyLong_FromLongLong(max_forwards) : (Py_INCREF(Py_None), Py_None);
    items[14] = PyLong_FromSsize_t(w.end);
    items[15] = lowered(v, 12, via_host_b);
    items[16] = PyBytes_FromStringAndSize((const char *)vp, vpn);
    items[17] = w.values[6] ? w.values[6] : Py_None;
    Py_INCREF(items[17]);
    items[18] = w.values[7] ? Py_True : Py_False;
    Py_INCREF(items[18]);
    items[19] = length >= 0 ? PyLong_FromLongLong(length) : (Py_INCREF(Py_None), Py_None);
    items[20] = w.at[9] ? (Py_INCREF(Py_None), Py_None) : at_list(w.at);
    for (int x = 0; x < 21; x++)
        if (items[x] == NULL)
            goto done;
    if ((result = PyTuple_New(21)) == NULL)
        goto done;
    for (int x = 0; x < 21; x++) {
        PyTuple_SET_ITEM(result, x, items[x]);
        items[x] = NULL;
    }
    goto done;
refuse:
    result = Py_None;
    Py_INCREF(result);
done:
    for (int x = 0; x < 21; x++)
        Py_XDECREF(items[x]);
    walked_clear(&w);
    return result;
}

/* The status line data[:n] is "SIP/2.0 NXX reason" (fast._status_line_loop). */
static int
status_line(const unsigned char *d, Py_ssize_t n)
{
    if (n < 13 || memcmp(d, "SIP/2.0 ", 8) != 0)
        return 0;
    if (d[8] < '1' || d[8] > '6' || d[9] < '0' || d[9] > '9' || d[10] < '0' || d[10] > '9' || d[11] != ' ')
        return 0;
    unsigned char c = d[12];
    if (c == ' ' || c == '\t' || d[n - 1] == ' ' || d[n - 1] == '\t')
        return 0;
    for (Py_ssize_t x = 13; x < n - 1; x++)
        if (d[x] == 13 || d[x] == 10)
            return 0;
    return 1;
}

PyDoc_STRVAR(response_walk_doc,
"response_walk(data, max_lines, max_line) -> (stop, values, vias, commas, rendered,\n"
"    first_at, first_colon, first_end, second_colon, second_end) | None\n\n"
"sipgate.sip.fast._response_walk_loop, with max_lines and max_line as for fields().");

static PyObject *
response_walk(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max_lines, max_line;
    if (arguments(args, nargs, 3, &max_lines, &max_line) < 0)
        return NULL;
    PyObject *data = args[0];
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    PyObject *values[6] = {NULL};
    PyObject *marks = NULL, *result = NULL;
    Py_ssize_t vias = 0, commas = 0;
    Py_ssize_t first_at = 0, first_colon = 0, first_end = 0, second_colon = 0, second_end = 0;
    Py_ssize_t i = line_end(d, 0, n);
    if (i < 0 || i > max_line || !status_line(d, i))
        Py_RETURN_NONE;
    if ((marks = PyList_New(0)) == NULL)
        return NULL;
    Py_ssize_t pos = i + 2, lineno = 0;
    while (pos + 1 >= n || d[pos] != 13 || d[pos + 1] != 10) {
        if (++lineno >= max_lines)
            REFUSE;
        Py_ssize_t k = colon_at(d, pos, n);
        if (k < 0)
            REFUSE;
        Py_ssize_t e = line_end(d, k + 1, n);
        if (e < 0 || e - pos > max_line)
            REFUSE;
        if (!rendered(d, k, e)) {  /* (a line the output renders) */
            Py_ssize_t three[3] = {pos, k, e};
            for (int x = 0; x < 3; x++) {
                PyObject *o = PyLong_FromSsize_t(three[x]);
                if (o == NULL || PyList_Append(marks, o) < 0) {
                    Py_XDECREF(o);
                    goto done;
                }
                Py_DECREF(o);
            }
        }
        int slot = name_slot(d, pos, k);
        if (slot == VIA) {
            int blank = 1;
            for (Py_ssize_t x = k + 1; x < e; x++) {
                unsigned char c = d[x];
                if (c == ',') {
                    commas++;
                    blank = 0;
                } else if (c != ' ' && c != '\t') {
                    blank = 0;
                }
            }
            if (blank)
                REFUSE;
            if (++vias == 1) {
                first_at = pos;
                first_colon = k;
                first_end = e;
            } else if (vias == 2) {
                second_colon = k;
                second_end = e;
            }
        } else if (slot >= 0 && slot < 6) {
            Py_ssize_t a = k + 1, b = e;
            trim(d, &a, &b);
            if (a == b)
                REFUSE;
            if (values[slot] == NULL) {
                if ((values[slot] = PyBytes_FromStringAndSize((const char *)d + a, b - a)) == NULL)
                    goto done;
            } else if (!same(values[slot], d + a, b - a)) {
                REFUSE;
            }
        }
        pos = e + 2;
    }
    PyObject *values6 = value_list(values, 6);
    if (values6 == NULL)
        goto done;
    Py_ssize_t numbers[8] = {pos, vias, commas, first_at, first_colon, first_end, second_colon, second_end};
    if ((result = PyTuple_New(10)) == NULL) {
        Py_DECREF(values6);
        goto done;
    }
    PyTuple_SET_ITEM(result, 1, values6);
    PyTuple_SET_ITEM(result, 4, marks);
    marks = NULL;  /* (the tuple's now) */
    for (int x = 0, at = 0; x < 10; x++) {
        if (x == 1 || x == 4)
            continue;
        PyObject *o = PyLong_FromSsize_t(numbers[at++]);
        if (o == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(result, x, o);
    }
done:
    for (int s = 0; s < 6; s++)
        Py_XDECREF(values[s]);
    Py_XDECREF(marks);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(token, compact, long): fast.py's header-name tables (once)."},
    {"fields", (PyCFunction)(void (*)(void))fields, METH_FASTCALL, fields_doc},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, scan_doc},
    {"response_walk", (PyCFunction)(void (*)(void))response_walk, METH_FASTCALL, response_walk_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipgate.sip._walk",
    "The fast path's header walks in C (see the source's opening comment).", -1, methods,
};

PyMODINIT_FUNC
PyInit__walk(void)
{
    return PyModule_Create(&module);
}
