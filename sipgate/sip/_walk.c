/*
 * sipgate.sip._walk: the compiled build's fast path over a datagram's bytes, in C.
 *
 * scan(data, max_lines, max_line, max_uri, max_vias) is sipgate.sip.fast._scan,
 * relay_response(data, max_lines, max_line, max_vias) is
 * fast._relay_response_loop and splice(data, s, ours, stamped, record_route,
 * pop_route) is fast._splice and forbidden(s, tag, extra) is the join of
 * fast.forbidden_response, field for field and byte for byte: the
 * framing checked (every line ends in CRLF, no other CR, LF or NUL), each
 * header name classified, the value grammars checked, the values read
 * sliced out, a relay's output copied in slices around the lines that
 * change.  fields() and response_walk() are the two header walks alone
 * (fast._fields_loop, fast._response_walk_loop), for the tests.  Compiled
 * by mypyc, the same walks index the datagram one byte at a time through
 * bounds-checked calls and each value grammar is a Python call; here a
 * byte is a load and a compare (benchmarks/README.md, "the admitted path
 * in C").  The Python functions stay as the interpreted build's code and
 * as the reference.
 *
 * The header-name tables and the grammars' character classes are fast.py's
 * own, handed over once by configure() (fast.configure_walks): one
 * definition of the grammar.  Built by `sipgate native build` with the
 * mypyc group and covered by the same freshness guard (sipgate/native.py);
 * tests/sip/test_fast_grammar.py and tests/sip/test_fast.py hold each
 * entry point to its Python twin on generated and damaged messages.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

/* Slots as in fast._SLOTS: 0..7 values, -1 Via, -2 not read, -3 Proxy-Require. */
#define VIA (-1)
#define NOT_READ (-2)
#define PROXY_REQUIRE (-3)
#define LONG_KEYS (16 << 5)
#define IS_BLANK(c) ((c) == ' ' || (c) == '\t')

static unsigned char token[256];          /* _T_TOKEN */
/* The value grammars' classes: _T_LABEL, _T_USER, _T_URI_PARAM, _T_SCHEME, _T_ADDR_SPEC */
static unsigned char label[256], user[256], uri_param[256], scheme[256], addr_spec[256], hop_value[256];
/* INVITE, ACK, BYE, CANCEL as bytes objects (the method scan() returns). */
static PyObject *method_objects[4];
/* A literal with its length from sizeof: strlen on an entry of a pointer
 * table is a libc call per use, which the compiler does not fold. */
struct literal {
    const char *text;
    Py_ssize_t len;
};
#define LITERAL(text) {text, (Py_ssize_t)sizeof(text) - 1}
static const struct literal METHODS[4] = {LITERAL("INVITE"), LITERAL("ACK"), LITERAL("BYE"), LITERAL("CANCEL")};
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
    static const int classes[] = {0, 1, 3, 4, 5, 6, 7, 8};  /* (the bytes[256] arguments) */
    int ok = nargs == 9 && PyTuple_Check(args[2]) && PyTuple_GET_SIZE(args[2]) == LONG_KEYS;
    for (int x = 0; ok && x < 8; x++)
        ok = PyBytes_Check(args[classes[x]]) && PyBytes_GET_SIZE(args[classes[x]]) == 256;
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "configure(token, compact, long: tuple[512], label, user, uri_param, "
                                         "scheme, addr_spec, hop_value): bytes[256] but long");
        return NULL;
    }
    unsigned char *targets[6] = {label, user, uri_param, scheme, addr_spec, hop_value};
    for (int x = 0; x < 6; x++) {
        const unsigned char *from = (const unsigned char *)PyBytes_AS_STRING(args[3 + x]);
        for (int i = 0; i < 256; i++)
            targets[x][i] = from[i] != 0;
    }
    for (int m = 0; m < 4; m++) {
        if (method_objects[m] == NULL
            && (method_objects[m] = PyBytes_FromStringAndSize(METHODS[m].text, METHODS[m].len)) == NULL)
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

/* The header line starting at ``pos``: a token name and a colon (*colon)
 * and a CRLF (*end) within ``max_line`` bytes of ``pos``; 0 when it is
 * not (fast._colon, fast._line_end and the length check of both walks). */
static int
header_line(const unsigned char *d, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t max_line, Py_ssize_t *colon,
            Py_ssize_t *end)
{
    *colon = colon_at(d, pos, n);
    if (*colon < 0)
        return 0;
    *end = line_end(d, *colon + 1, n);
    return *end >= 0 && *end - pos <= max_line;
}

/* The line with its colon at ``colon`` and end at ``end`` is "Name: value"
 * with no blank at either end of the value (fast._rendered). */
static int
rendered(const unsigned char *d, Py_ssize_t colon, Py_ssize_t end)
{
    if (colon + 2 >= end || d[colon + 1] != ' ')
        return 0;
    unsigned char c = d[colon + 2], last = d[end - 1];
    return !IS_BLANK(c) && !IS_BLANK(last);
}

/* d[a:b] without blanks at either end, as bounds (fast._trimmed). */
static void
trim(const unsigned char *d, Py_ssize_t *a, Py_ssize_t *b)
{
    while (*a < *b && IS_BLANK(d[*a]))
        (*a)++;
    while (*b > *a && IS_BLANK(d[*b - 1]))
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
        Py_ssize_t k, e;
        if (++lineno >= max_lines || !header_line(d, pos, n, max_line, &k, &e))
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

/* End of (;token[=token])* from ``i``, a value made of ``values``'s
 * characters (token: the grammar's). */
static Py_ssize_t
token_params_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n, const unsigned char *values)
{
    while (i < n && p[i] == ';') {
        Py_ssize_t j = i + 1;
        while (j < n && token[p[j]])
            j++;
        if (j == i + 1)
            return i;
        if (j < n && p[j] == '=') {
            Py_ssize_t k = j + 1;
            while (k < n && values[p[k]])
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
        if (n == METHODS[m].len && memcmp(p, METHODS[m].text, (size_t)n) == 0)
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

/* fast._via_sent_by: 1 with the port's bounds (equal: none) when the
 * optional ":" port at ``after`` and the parameters (their values made of
 * ``values``) run to the end, else 0. */
static int
via_sent_by(const unsigned char *p, Py_ssize_t n, Py_ssize_t after, Py_ssize_t *port_a, Py_ssize_t *port_b,
            const unsigned char *values)
{
    Py_ssize_t e = port_end(p, after, n);
    if (e < 0 || token_params_end(p, e, n, values) != n)
        return 0;
    *port_a = e > after ? after + 1 : e;
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
    *host_b = h;
    return via_sent_by(p, n, h, port_a, port_b, token);
}

/* fast._via_ipv6: via() for a sent-by host in brackets ("[" hex digits,
 * colons and dots "]"); the host's bounds are inside the brackets. */
static int
via_ipv6(const unsigned char *p, Py_ssize_t n, Py_ssize_t *host_a, Py_ssize_t *host_b, Py_ssize_t *port_a,
         Py_ssize_t *port_b, const unsigned char *values)
{
    if (n < 13 || memcmp(p, "SIP/2.0/UDP [", 13) != 0)
        return 0;
    Py_ssize_t close = 13;
    while (close < n && ((p[close] >= '0' && p[close] <= '9') || ((p[close] | 32) >= 'a' && (p[close] | 32) <= 'f')
                         || p[close] == ':' || p[close] == '.'))
        close++;
    if (close == 13 || close >= n || p[close] != ']')
        return 0;
    *host_a = 13;
    *host_b = close;
    return via_sent_by(p, n, close + 1, port_a, port_b, values);
}

/* fast._hop_via: 1 with the host's bounds (inside the brackets of an IPv6
 * reference, whose literal inet_pton must take: it takes exactly what
 * ipaddress.IPv6Address does over these characters) and the port's, else
 * 0; parameter values made of hop_value's characters. */
static int
hop_via(const unsigned char *p, Py_ssize_t n, Py_ssize_t *host_a, Py_ssize_t *host_b, Py_ssize_t *port_a,
        Py_ssize_t *port_b)
{
    if (n < 12 || memcmp(p, "SIP/2.0/UDP ", 12) != 0)
        return 0;
    Py_ssize_t h = host_end(p, 12, n);
    if (h >= 0) {
        *host_a = 12;
        *host_b = h;
        return via_sent_by(p, n, h, port_a, port_b, hop_value);
    }
    if (!via_ipv6(p, n, host_a, host_b, port_a, port_b, hop_value))
        return 0;
    char literal[INET6_ADDRSTRLEN];
    unsigned char binary[16];
    Py_ssize_t size = *host_b - *host_a;
    if (size >= (Py_ssize_t)sizeof(literal))
        return 0;
    memcpy(literal, p + *host_a, (size_t)size);
    literal[size] = 0;
    return inet_pton(AF_INET6, literal, binary) == 1;
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
        while (i < n && IS_BLANK(p[i]))
            i++;
    } else if (n && token[p[0]]) {
        for (;;) {
            while (i < n && token[p[i]])
                i++;
            Py_ssize_t blank = i;
            while (i < n && IS_BLANK(p[i]))
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
    if (token_params_end(p, i, n, token) != n)
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

/* v in decimal, as "%lld" writes it, into out (at least 21 bytes); the
 * number of bytes.  snprintf costs ~500 instructions a call (its format
 * parser), this ~10 a digit; the request relay writes two a datagram. */
static int
decimal(char *out, long long v)
{
    char tmp[24];
    int n = 0, k = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0)
        out[k++] = '-';
    while (n > 0)
        out[k++] = tmp[--n];
    return k;
}

/* fast._param_loop over p[0:n] for ``name`` (lower case, m bytes): 1
 * found (with the value's bounds, or *va = -1 without "="), 0 not.
 * Called through PARAM with a literal, whose length sizeof gives. */
static int
param(const unsigned char *p, Py_ssize_t n, const char *name, Py_ssize_t m, Py_ssize_t *va, Py_ssize_t *vb)
{
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
param_value(const unsigned char *p, Py_ssize_t n, const char *name, Py_ssize_t m, int empty_is_none)
{
    Py_ssize_t a, b;
    if (!param(p, n, name, m, &a, &b) || a < 0 || (empty_is_none && a == b))
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)p + a, b - a);
}
#define PARAM(p, n, lit, va, vb) param((p), (n), (lit), (Py_ssize_t)sizeof(lit) - 1, (va), (vb))
#define PARAM_VALUE(p, n, lit, empty_is_none) param_value((p), (n), (lit), (Py_ssize_t)sizeof(lit) - 1, (empty_is_none))

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

/* A CSeq value c[0:n]: 1-10 digits (their end in *digits) and blanks after
 * them (what follows in *word); 0 when it does not start so
 * (fast._cseq_number). */
static int
cseq_number(const unsigned char *c, Py_ssize_t n, Py_ssize_t *digits, Py_ssize_t *word)
{
    Py_ssize_t i = 0;
    while (i < n && c[i] >= '0' && c[i] <= '9')
        i++;
    if (i == 0 || i > 10)
        return 0;
    Py_ssize_t j = i;
    while (j < n && IS_BLANK(c[j]))
        j++;
    *digits = i;
    *word = j;
    return j > i;
}

/* The value of a bytes object of 1-10 ASCII digits, or -1 (fast._uint). */
static long long
bytes_uint(PyObject *digits)
{
    return uint_value((const unsigned char *)PyBytes_AS_STRING(digits), PyBytes_GET_SIZE(digits));
}

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
    if (w.line0 - METHODS[method].len - 9 > max_uri)
        goto refuse;  /* (the full parser answers 414) */
    if (port_b > port_a && uint_value(d + port_a, port_b - port_a) > 65535)
        goto refuse;
    PyObject *from = w.values[0], *to = w.values[1], *call_id = w.values[2], *cseq = w.values[3];
    Py_ssize_t vias = PyList_GET_SIZE(w.vias);
    if (!vias || !from || !to || !call_id || !cseq || vias > max_vias)
        goto refuse;
    /* CSeq: 1-10 digits, blanks, the request's method (fast._cseq_loop) */
    const unsigned char *c = (const unsigned char *)PyBytes_AS_STRING(cseq);
    Py_ssize_t cn = PyBytes_GET_SIZE(cseq), digits, word;
    if (!cseq_number(c, cn, &digits, &word) || method_index(c + word, cn - word) != method)
        goto refuse;
    long long number = uint_value(c, digits);
    if (number > MAX_CSEQ)
        goto refuse;
    long long max_forwards = -2, length = -2;  /* (-2: absent) */
    if (w.values[4]) {
        max_forwards = bytes_uint(w.values[4]);
        if (max_forwards < 0)
            goto refuse;
    }
    if (w.values[5]) {
        length = bytes_uint(w.values[5]);
        if (length < 0 || n - w.end - 4 < length)
            goto refuse;
    }
    PyObject *top = PyList_GET_ITEM(w.vias, 0);
    const unsigned char *v = (const unsigned char *)PyBytes_AS_STRING(top);
    Py_ssize_t vn = PyBytes_GET_SIZE(top), via_host_a = 12, via_host_b, via_port_a, via_port_b;
    const unsigned char *tp = (const unsigned char *)PyBytes_AS_STRING(to);
    const unsigned char *fp = (const unsigned char *)PyBytes_AS_STRING(from);
    Py_ssize_t tn = PyBytes_GET_SIZE(to), fn = PyBytes_GET_SIZE(from);
    Py_ssize_t to_params = name_addr(tp, tn), from_params = name_addr(fp, fn);
    if ((!via(v, vn, &via_host_b, &via_port_a, &via_port_b)
         && !via_ipv6(v, vn, &via_host_a, &via_host_b, &via_port_a, &via_port_b, token)) || to_params < 0 || from_params < 0)
        goto refuse;
    long long via_port = -2;
    if (via_port_b > via_port_a) {
        via_port = uint_value(v + via_port_a, via_port_b - via_port_a);
        if (via_port > 65535)
            goto refuse;
    }
    const unsigned char *vp = v + via_port_b;  /* (the Via's parameters) */
    Py_ssize_t vpn = vn - via_port_b, ra, rb;
    int has_rport = PARAM(vp, vpn, "rport", &ra, &rb);
    items[0] = method_objects[method];
    Py_INCREF(items[0]);
    items[1] = lowered(d, host_a, host_b);
    items[2] = PARAM_VALUE(tp + to_params, tn - to_params, "tag", 1);
    items[3] = PARAM_VALUE(fp + from_params, fn - from_params, "tag", 1);
    items[4] = PARAM_VALUE(vp, vpn, "branch", 0);
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
    items[15] = lowered(v, via_host_a, via_host_b);
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
    if (IS_BLANK(c) || IS_BLANK(d[n - 1]))
        return 0;
    for (Py_ssize_t x = 13; x < n - 1; x++)
        if (d[x] == 13 || d[x] == 10)
            return 0;
    return 1;
}

/* What the response walk found (fast._response_walk_loop): the bounds of
 * the six values it reads (a < 0: absent), the Via lines and the commas in
 * them, (start, colon, end) of each line not in rendered form, where the
 * first Via line starts, its colon and end, the second's colon and end,
 * and the offset of the empty line. */
#define MAX_WALKED_LINES 256
typedef struct {
    Py_ssize_t value_a[6], value_b[6];
    Py_ssize_t vias, commas, marks;
    Py_ssize_t mark[3 * MAX_WALKED_LINES];
    Py_ssize_t first_at, first_colon, first_end, second_colon, second_end, stop;
} RWalked;

/* 1 walked, 0 refused (the full path's business). */
static int
walk_response(const unsigned char *d, Py_ssize_t n, Py_ssize_t max_lines, Py_ssize_t max_line, RWalked *w)
{
    memset(w, 0, offsetof(RWalked, mark));
    w->first_at = w->first_colon = w->first_end = w->second_colon = w->second_end = 0;
    for (int s = 0; s < 6; s++)
        w->value_a[s] = -1;
    Py_ssize_t i = line_end(d, 0, n);
    if (i < 0 || i > max_line || !status_line(d, i))
        return 0;
    Py_ssize_t pos = i + 2, lineno = 0;
    while (pos + 1 >= n || d[pos] != 13 || d[pos + 1] != 10) {
        Py_ssize_t k, e;
        if (++lineno >= max_lines || lineno >= MAX_WALKED_LINES || !header_line(d, pos, n, max_line, &k, &e))
            return 0;
        if (!rendered(d, k, e)) {  /* (a line the output renders) */
            w->mark[w->marks++] = pos;
            w->mark[w->marks++] = k;
            w->mark[w->marks++] = e;
        }
        int slot = name_slot(d, pos, k);
        if (slot == VIA) {
            int blank = 1;
            for (Py_ssize_t x = k + 1; x < e; x++) {
                unsigned char c = d[x];
                if (c == ',') {
                    w->commas++;
                    blank = 0;
                } else if (!IS_BLANK(c)) {
                    blank = 0;
                }
            }
            if (blank)
                return 0;
            if (++w->vias == 1) {
                w->first_at = pos;
                w->first_colon = k;
                w->first_end = e;
            } else if (w->vias == 2) {
                w->second_colon = k;
                w->second_end = e;
            }
        } else if (slot >= 0 && slot < 6) {
            Py_ssize_t a = k + 1, b = e;
            trim(d, &a, &b);
            if (a == b)
                return 0;
            if (w->value_a[slot] < 0) {
                w->value_a[slot] = a;
                w->value_b[slot] = b;
            } else if (w->value_b[slot] - w->value_a[slot] != b - a
                       || memcmp(d + w->value_a[slot], d + a, (size_t)(b - a)) != 0) {
                return 0;
            }
        }
        pos = e + 2;
    }
    w->stop = pos;
    return 1;
}

static int
walk_arguments(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t count, Py_ssize_t *max_lines,
               Py_ssize_t *max_line)
{
    if (arguments(args, nargs, count, max_lines, max_line) < 0)
        return -1;
    if (*max_lines > MAX_WALKED_LINES) {
        PyErr_SetString(PyExc_ValueError, "max_lines: at most 256 (fast._MAX_LINES is 200)");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(response_walk_doc,
"response_walk(data, max_lines, max_line) -> (stop, values, vias, commas, rendered,\n"
"    first_at, first_colon, first_end, second_colon, second_end) | None\n\n"
"sipgate.sip.fast._response_walk_loop, with max_lines and max_line as for fields().");

static PyObject *
response_walk(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max_lines, max_line;
    if (walk_arguments(args, nargs, 3, &max_lines, &max_line) < 0)
        return NULL;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    RWalked w;
    if (!walk_response(d, PyBytes_GET_SIZE(args[0]), max_lines, max_line, &w))
        Py_RETURN_NONE;
    PyObject *values[6] = {NULL}, *result = NULL, *marks = NULL, *values6 = NULL;
    for (int s = 0; s < 6; s++) {
        if (w.value_a[s] >= 0
            && (values[s] = PyBytes_FromStringAndSize((const char *)d + w.value_a[s], w.value_b[s] - w.value_a[s]))
               == NULL)
            goto done;
    }
    if ((values6 = value_list(values, 6)) == NULL || (marks = PyList_New(w.marks)) == NULL)
        goto done;
    for (Py_ssize_t x = 0; x < w.marks; x++) {
        PyObject *o = PyLong_FromSsize_t(w.mark[x]);
        if (o == NULL)
            goto done;
        PyList_SET_ITEM(marks, x, o);
    }
    Py_ssize_t numbers[8] = {w.stop, w.vias, w.commas, w.first_at, w.first_colon, w.first_end, w.second_colon,
                             w.second_end};
    if ((result = PyTuple_New(10)) == NULL)
        goto done;
    PyTuple_SET_ITEM(result, 1, values6);
    PyTuple_SET_ITEM(result, 4, marks);
    values6 = marks = NULL;  /* (the tuple's now) */
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
    Py_XDECREF(values6);
    Py_XDECREF(marks);
    return result;
}

/* fast._hops over the popped Via element top[0:tn] and the next hop's
 * next[0:nn]: 1 with the answer's six items set (new references), 0 for
 * the full path, -1 with an exception set. */
static int
hops(const unsigned char *top, Py_ssize_t tn, const unsigned char *next, Py_ssize_t nn, PyObject **out)
{
    Py_ssize_t top_ha = 12, top_host, top_pa, top_pb, next_ha = 12, next_host, next_pa, next_pb;
    if ((!via(top, tn, &top_host, &top_pa, &top_pb) && !hop_via(top, tn, &top_ha, &top_host, &top_pa, &top_pb))
        || (!via(next, nn, &next_host, &next_pa, &next_pb)
            && !hop_via(next, nn, &next_ha, &next_host, &next_pa, &next_pb)))
        return 0;
    long long top_number = top_pb > top_pa ? uint_value(top + top_pa, top_pb - top_pa) : -1;
    long long next_number = next_pb > next_pa ? uint_value(next + next_pa, next_pb - next_pa) : 0;
    if (top_number > 65535 || next_number > 65535)
        return 0;
    const unsigned char *tparams = top + top_pb, *nparams = next + next_pb;
    Py_ssize_t tpn = tn - top_pb, npn = nn - next_pb, ra, rb, pa, pb, ba, bb;
    int has_received = PARAM(nparams, npn, "received", &ra, &rb);
    if (has_received && ra >= 0 && rb - ra > 1 && nparams[ra] == '[' && nparams[rb - 1] == ']') {
        ra++;  /* (Via.received drops an IPv6 reference's brackets) */
        rb--;
    }
    if (has_received && (ra < 0 || ra == rb))
        return 0;  /* (an empty received: the full path's business) */
    long long port = 0;
    if (PARAM(nparams, npn, "rport", &pa, &pb) && pa >= 0 && pb - pa <= 5)
        port = uint_value(nparams + pa, pb - pa);
    if (!(port > 0 && port < 65536))
        port = next_number ? next_number : 5060;
    out[0] = lowered(top, top_ha, top_host);
    if (top_pb > top_pa) {
        out[1] = PyLong_FromLongLong(top_number);
    } else {
        out[1] = Py_None;
        Py_INCREF(Py_None);
    }
    /* the received host as written (relay_response does not lower it) */
    out[2] = has_received ? PyUnicode_DecodeASCII((const char *)nparams + ra, rb - ra, NULL)
                          : lowered(next, next_ha, next_host);
    out[3] = PyLong_FromLongLong(port);
    out[4] = PARAM_VALUE(tparams, tpn, "branch", 0);
    if (PARAM(nparams, npn, "branch", &ba, &bb) && ba >= 0 && bb - ba >= 7 && memcmp(nparams + ba, "z9hG4bK", 7) == 0) {
        /* b"\0".join((b"3261", branch, next host lowered, port digits or b"")) */
        char digits[24];
        int nd = next_number ? decimal(digits, next_number) : 0;
        Py_ssize_t hn = next_host - next_ha, size = 4 + 1 + (bb - ba) + 1 + hn + 1 + nd;
        out[5] = PyBytes_FromStringAndSize(NULL, size);
        if (out[5] != NULL) {
            char *q = PyBytes_AS_STRING(out[5]);
            memcpy(q, "3261", 4);
            q += 4;
            *q++ = 0;
            memcpy(q, nparams + ba, (size_t)(bb - ba));
            q += bb - ba;
            *q++ = 0;
            for (Py_ssize_t x = next_ha; x < next_host; x++)
                *q++ = (char)(next[x] >= 'A' && next[x] <= 'Z' ? next[x] | 32 : next[x]);
            *q++ = 0;
            memcpy(q, digits, (size_t)nd);
        }
    } else {
        out[5] = Py_None;
        Py_INCREF(Py_None);
    }
    for (int x = 0; x < 6; x++)
        if (out[x] == NULL)
            return -1;
    return 1;
}

/* The bounds of the first comma-separated element of p[a:b] and of the
 * second (or of the first of the next line), as fast._next_hop. */
typedef struct {
    const unsigned char *p;
    Py_ssize_t a, b;
} Span;

/* Every comma-separated element of p[a:b] is non-blank; the first one's
 * bounds, stripped, in *first, and the second's in *second (if any).
 * Returns the number of elements, or 0 when one is blank. */
static Py_ssize_t
elements(const unsigned char *p, Py_ssize_t a, Py_ssize_t b, Span *first, Span *second)
{
    Py_ssize_t count = 0, start = a;
    for (Py_ssize_t x = a; x <= b; x++) {
        if (x == b || p[x] == ',') {
            Span e = {p, start, x};
            trim(p, &e.a, &e.b);
            if (e.a == e.b)
                return 0;
            if (count == 0)
                *first = e;
            else if (count == 1)
                *second = e;
            count++;
            start = x + 1;
        }
    }
    return count;
}

typedef struct {
    const char *p;
    Py_ssize_t n;
} Piece;

PyDoc_STRVAR(relay_response_doc,
"relay_response(data, max_lines, max_line, max_vias) -> tuple | None\n\n"
"sipgate.sip.fast.relay_response_bytes (the compiled build's) in one call:\n"
"(response without sipgate's Via, popped Via host, port, next hop host,\n"
"port, popped branch, the next Via's branch material), or None.");

static PyObject *
relay_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max_lines, max_line;
    if (walk_arguments(args, nargs, 4, &max_lines, &max_line) < 0)
        return NULL;
    Py_ssize_t max_vias = PyLong_AsSsize_t(args[3]);
    if (max_vias == -1 && PyErr_Occurred())
        return NULL;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    RWalked w;
    if (!walk_response(d, n, max_lines, max_line, &w))
        Py_RETURN_NONE;
    /* From, To, Call-ID, CSeq present; the Via count within max_vias */
    if (!w.vias || w.value_a[0] < 0 || w.value_a[1] < 0 || w.value_a[2] < 0 || w.value_a[3] < 0)
        Py_RETURN_NONE;
    if (w.vias > max_vias || w.commas + w.vias > max_vias)
        Py_RETURN_NONE;  /* (commas may be inside quotes: declining is always safe) */
    /* fast._response_body: CSeq (fast._cseq_any_loop), Max-Forwards, Content-Length */
    const unsigned char *c = d + w.value_a[3];
    Py_ssize_t cn = w.value_b[3] - w.value_a[3], digits, word;
    if (!cseq_number(c, cn, &digits, &word) || word == cn)
        Py_RETURN_NONE;
    for (Py_ssize_t x = word; x < cn; x++)
        if (!token[c[x]])
            Py_RETURN_NONE;
    if (uint_value(c, digits) > MAX_CSEQ)
        Py_RETURN_NONE;
    if (w.value_a[4] >= 0 && uint_value(d + w.value_a[4], w.value_b[4] - w.value_a[4]) < 0)
        Py_RETURN_NONE;
    Py_ssize_t end = w.stop - 2, body_a = end + 4, body_b = n;
    if (w.value_a[5] >= 0) {
        long long size = uint_value(d + w.value_a[5], w.value_b[5] - w.value_a[5]);
        if (size < 0 || n - body_a < size)
            Py_RETURN_NONE;
        body_b = body_a + (Py_ssize_t)size;
    }
    /* fast._next_hop: sipgate's Via element, the next hop's, what stays of the first line */
    Py_ssize_t fa = w.first_colon + 1, fb = w.first_end;
    trim(d, &fa, &fb);
    Span top = {d, 0, 0}, next = {d, 0, 0};
    Py_ssize_t count = elements(d, fa, fb, &top, &next);
    Py_ssize_t rest_a = -1, rest_b = -1;
    if (count == 0)
        Py_RETURN_NONE;
    if (count > 1) {
        rest_a = (const unsigned char *)memchr(d + fa, ',', (size_t)(fb - fa)) - d + 1;
        rest_b = fb;
        while (rest_a < rest_b && (IS_BLANK(d[rest_a]) || d[rest_a] == ','))
            rest_a++;
        if (rest_a == rest_b)
            Py_RETURN_NONE;
    } else {
        if (w.vias < 2)
            Py_RETURN_NONE;  /* no Via left: the full path drops it */
        Span ignored;
        if (!elements(d, w.second_colon + 1, w.second_end, &next, &ignored))
            Py_RETURN_NONE;
    }
    PyObject *items[7] = {NULL};
    int found = hops(top.p + top.a, top.b - top.a, next.p + next.a, next.b - next.a, items + 1);
    if (found <= 0) {
        for (int x = 1; x < 7; x++)
            Py_XDECREF(items[x]);
        if (found < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    /* The output (as _response_out): the datagram's bytes with the first Via
     * line cut or rewritten and each line not in rendered form rendered. */
    Piece pieces[3 * (3 * MAX_WALKED_LINES / 3 + 1) + 8];
    int np = 0;
    Py_ssize_t last = 0;
    int via_done = 0;
    for (Py_ssize_t x = 0; x < w.marks + 3; x += 3) {
        Py_ssize_t start, colon, stop_at;
        if (x < w.marks) {
            start = w.mark[x];
            colon = w.mark[x + 1];
            stop_at = w.mark[x + 2];
        } else {
            start = colon = stop_at = w.stop;  /* (past every line: only the Via may be left) */
        }
        if (!via_done && w.first_at <= start) {
            via_done = 1;
            pieces[np++] = (Piece){(const char *)d + last, w.first_at - last};
            if (rest_a < 0) {
                last = w.first_end + 2;
            } else {
                pieces[np++] = (Piece){(const char *)d + w.first_at, w.first_colon - w.first_at};
                pieces[np++] = (Piece){": ", 2};
                pieces[np++] = (Piece){(const char *)d + rest_a, rest_b - rest_a};
                last = w.first_end;
            }
        }
        if (start == w.first_at || start == w.stop)
            continue;
        Py_ssize_t va = colon + 1, vb = stop_at;
        trim(d, &va, &vb);
        pieces[np++] = (Piece){(const char *)d + last, colon - last};
        pieces[np++] = (Piece){": ", 2};
        pieces[np++] = (Piece){(const char *)d + va, vb - va};
        last = stop_at;
    }
    pieces[np++] = (Piece){(const char *)d + last, end + 4 - last};
    pieces[np++] = (Piece){(const char *)d + body_a, body_b - body_a};
    Py_ssize_t total = 0;
    for (int x = 0; x < np; x++)
        total += pieces[x].n;
    items[0] = PyBytes_FromStringAndSize(NULL, total);
    if (items[0] == NULL) {
        for (int x = 1; x < 7; x++)
            Py_XDECREF(items[x]);
        return NULL;
    }
    char *q = PyBytes_AS_STRING(items[0]);
    for (int x = 0; x < np; x++) {
        memcpy(q, pieces[x].p, (size_t)pieces[x].n);
        q += pieces[x].n;
    }
    PyObject *result = PyTuple_New(7);
    for (int x = 0; x < 7; x++) {
        if (result != NULL)
            PyTuple_SET_ITEM(result, x, items[x]);
        else
            Py_DECREF(items[x]);
    }
    return result;
}

/* -- The relayed request (fast._splice) ---------------------------------- */

/* fast.Scanned's field indexes splice() reads. */
#define S_MAX_FORWARDS 13
#define S_END 14
#define S_RECORD_ROUTE 18
#define S_CONTENT_LENGTH 19
#define S_AT 20
#define S_FIELDS 21

static int
index_of(PyObject *at, int slot, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(PyList_GET_ITEM(at, slot));
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* Grows a bytes buffer under construction: room for ``more`` at *used. */
typedef struct {
    PyObject *bytes;
    Py_ssize_t used;
} Out;

static int
put(Out *o, const void *p, Py_ssize_t n)
{
    if (o->used + n > PyBytes_GET_SIZE(o->bytes)
        && _PyBytes_Resize(&o->bytes, (o->used + n) * 2 + 64) < 0)
        return -1;
    memcpy(PyBytes_AS_STRING(o->bytes) + o->used, p, (size_t)n);
    o->used += n;
    return 0;
}

PyDoc_STRVAR(splice_doc,
"splice(data, s, ours, stamped, record_route, pop_route) -> bytes\n\n"
"sipgate.sip.fast._splice for the scanned request s (whose AT is not None):\n"
"the relayed request, sipgate's Via (ours) on top, the sender's (stamped)\n"
"below it, Max-Forwards and Content-Length rewritten, sipgate's Route popped\n"
"(pop_route), record_route (or None) added.");

static PyObject *
splice(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyBytes_Check(args[0]) || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != S_FIELDS
        || !PyBytes_Check(args[2]) || !PyBytes_Check(args[3]) || (args[4] != Py_None && !PyBytes_Check(args[4]))) {
        PyErr_SetString(PyExc_TypeError, "splice(data, s, ours: bytes, stamped: bytes, record_route, pop_route)");
        return NULL;
    }
    PyObject *s = args[1], *at = PyTuple_GET_ITEM(s, S_AT), *rr = args[4];
    if (!PyList_Check(at) || PyList_GET_SIZE(at) != 10) {
        PyErr_SetString(PyExc_ValueError, "splice(): the scan has no line indexes");
        return NULL;
    }
    int pop_route = PyObject_IsTrue(args[5]);
    if (pop_route < 0)
        return NULL;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(s, S_END));
    if (end == -1 && PyErr_Occurred())
        return NULL;
    if (end < 0 || end + 4 > n) {
        PyErr_SetString(PyExc_ValueError, "splice(): END is not this datagram's");
        return NULL;
    }
    /* the body: what follows the empty line, up to Content-Length */
    Py_ssize_t body_a = end + 4, body_n = n - body_a;
    PyObject *cl = PyTuple_GET_ITEM(s, S_CONTENT_LENGTH), *mf = PyTuple_GET_ITEM(s, S_MAX_FORWARDS);
    if (cl != Py_None) {
        Py_ssize_t size = PyLong_AsSsize_t(cl);
        if (size == -1 && PyErr_Occurred())
            return NULL;
        if (size < body_n)
            body_n = size < 0 ? 0 : size;
    }
    Py_ssize_t via_at, mf_at = 0, cl_at = 0, route_at = 0, rr_at = 0;
    if (index_of(at, 8, &via_at) < 0)
        return NULL;
    long long hops = 0;
    if (mf != Py_None) {
        if (index_of(at, 4, &mf_at) < 0)
            return NULL;
        hops = PyLong_AsLongLong(mf);
        if (hops == -1 && PyErr_Occurred())
            return NULL;
        hops = hops > 0 ? hops - 1 : 0;
    }
    if (cl != Py_None && index_of(at, 5, &cl_at) < 0)
        return NULL;
    if (pop_route && index_of(at, 6, &route_at) < 0)
        return NULL;
    if (rr != Py_None && PyObject_IsTrue(PyTuple_GET_ITEM(s, S_RECORD_ROUTE)) && index_of(at, 7, &rr_at) < 0)
        return NULL;
    char hop_digits[24], length_digits[24];
    int hop_n = decimal(hop_digits, hops);
    int length_n = decimal(length_digits, (long long)body_n);
    Out o = {PyBytes_FromStringAndSize(NULL, n + PyBytes_GET_SIZE(args[2]) + 128), 0};
    if (o.bytes == NULL)
        return NULL;
    const char *rr_p = rr != Py_None ? PyBytes_AS_STRING(rr) : NULL;
    Py_ssize_t rr_n = rr != Py_None ? PyBytes_GET_SIZE(rr) : 0;
    /* the start line, sipgate's Via, a Record-Route of its own when there is none to go before */
    Py_ssize_t pos = 0, lineno = 0;
    const unsigned char *eol = memchr(d, '\r', (size_t)end);
    Py_ssize_t line_stop = eol ? eol - d : end;
    int failed = put(&o, d, line_stop) < 0 || put(&o, "\r\nVia: ", 7) < 0
                 || put(&o, PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2])) < 0;
    if (!failed && rr_p && !rr_at)
        failed = put(&o, "\r\nRecord-Route: ", 16) < 0 || put(&o, rr_p, rr_n) < 0;
    pos = line_stop + 2;
    while (!failed && pos <= end) {
        lineno++;
        eol = memchr(d + pos, '\r', (size_t)(end - pos));
        line_stop = eol ? eol - d : end;
        if (lineno == rr_at)
            failed = put(&o, "\r\nRecord-Route: ", 16) < 0 || put(&o, rr_p, rr_n) < 0;
        if (!failed && lineno != route_at) {
            const char *value = NULL;
            Py_ssize_t value_n = 0;
            if (lineno == via_at) {
                value = PyBytes_AS_STRING(args[3]);
                value_n = PyBytes_GET_SIZE(args[3]);
            } else if (lineno == mf_at) {
                value = hop_digits;
                value_n = hop_n;
            } else if (lineno == cl_at) {
                value = length_digits;
                value_n = length_n;
            }
            if (value) {  /* the name as written, ": ", the new value (fast._revalued) */
                const unsigned char *colon = memchr(d + pos, ':', (size_t)(line_stop - pos));
                Py_ssize_t name_n = colon ? colon - (d + pos) : line_stop - pos;
                failed = put(&o, "\r\n", 2) < 0 || put(&o, d + pos, name_n) < 0 || put(&o, ": ", 2) < 0
                         || put(&o, value, value_n) < 0;
            } else {
                failed = put(&o, "\r\n", 2) < 0 || put(&o, d + pos, line_stop - pos) < 0;
            }
        }
        pos = line_stop + 2;
    }
    if (!failed && mf == Py_None)
        failed = put(&o, "\r\nMax-Forwards: 70", 18) < 0;
    if (!failed && cl == Py_None)
        failed = put(&o, "\r\nContent-Length: ", 18) < 0 || put(&o, length_digits, length_n) < 0;
    if (!failed)
        failed = put(&o, "\r\n\r\n", 4) < 0 || put(&o, d + body_a, body_n) < 0;
    if (failed) {
        Py_XDECREF(o.bytes);
        return NULL;
    }
    if (_PyBytes_Resize(&o.bytes, o.used) < 0)
        return NULL;
    return o.bytes;
}

/* -- The 403 to a scanned request (fast.forbidden_response) -------------- */

/* fast.Scanned's field indexes forbidden() reads. */
#define S_CALL_ID 7
#define S_VIAS 9
#define S_FROM 10
#define S_TO 11
#define S_CSEQ 12

PyDoc_STRVAR(forbidden_doc,
"forbidden(s, tag, extra) -> bytes\n\n"
"sipgate.sip.fast.forbidden_response for the scanned request s, given its\n"
"To-tag (tag) and the encoded lines after CSeq (extra): the same bytes in\n"
"one allocation, where bytes.join took a tuple and two joins.");

static PyObject *
forbidden(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) != S_FIELDS
        || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "forbidden(s, tag: bytes, extra: bytes)");
        return NULL;
    }
    PyObject *s = args[0], *vias = PyTuple_GET_ITEM(s, S_VIAS);
    if (!PyList_Check(vias) || PyList_GET_SIZE(vias) == 0) {
        PyErr_SetString(PyExc_TypeError, "forbidden(): the scan's Vias are not a non-empty list");
        return NULL;
    }
    /* The literals around the fields, in order (see the writes below). */
    static const struct literal LIT[] = {
        LITERAL("SIP/2.0 403 Forbidden\r\nVia: "), LITERAL("\r\nFrom: "), LITERAL("\r\nTo: "), LITERAL(";tag="),
        LITERAL("\r\nCall-ID: "), LITERAL("\r\nCSeq: "), LITERAL("\r\n"), LITERAL("Content-Length: 0\r\n\r\n")};
    PyObject *field[] = {PyTuple_GET_ITEM(s, S_FROM), PyTuple_GET_ITEM(s, S_TO), args[1],
                         PyTuple_GET_ITEM(s, S_CALL_ID), PyTuple_GET_ITEM(s, S_CSEQ), args[2]};
    Py_ssize_t nv = PyList_GET_SIZE(vias), total = 0;
    for (int i = 0; i < 8; i++)
        total += LIT[i].len;
    for (int i = 0; i < 6; i++) {
        if (!PyBytes_Check(field[i])) {
            PyErr_SetString(PyExc_TypeError, "forbidden(): From, To, Call-ID and CSeq must be bytes");
            return NULL;
        }
        total += PyBytes_GET_SIZE(field[i]);
    }
    for (Py_ssize_t i = 0; i < nv; i++) {
        PyObject *via = PyList_GET_ITEM(vias, i);
        if (!PyBytes_Check(via)) {
            PyErr_SetString(PyExc_TypeError, "forbidden(): a Via is not bytes");
            return NULL;
        }
        total += PyBytes_GET_SIZE(via) + (i ? 7 : 0);  /* ("\r\nVia: " between two) */
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(out);
#define PUT(p, n) (memcpy(w, (p), (size_t)(n)), w += (n))
#define PUT_LIT(i) PUT(LIT[i].text, LIT[i].len)
#define PUT_FIELD(o) PUT(PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o))
    PUT_LIT(0);
    for (Py_ssize_t i = 0; i < nv; i++) {
        if (i)
            PUT("\r\nVia: ", 7);
        PUT_FIELD(PyList_GET_ITEM(vias, i));
    }
    /* From, To;tag=, Call-ID, CSeq, extra, Content-Length */
    PUT_LIT(1), PUT_FIELD(field[0]);
    PUT_LIT(2), PUT_FIELD(field[1]), PUT_LIT(3), PUT_FIELD(field[2]);
    PUT_LIT(4), PUT_FIELD(field[3]);
    PUT_LIT(5), PUT_FIELD(field[4]), PUT_LIT(6);
    PUT_FIELD(field[5]);
    PUT_LIT(7);
#undef PUT_FIELD
#undef PUT_LIT
#undef PUT
    return out;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(token, compact, long): fast.py's header-name tables (once)."},
    {"fields", (PyCFunction)(void (*)(void))fields, METH_FASTCALL, fields_doc},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, scan_doc},
    {"response_walk", (PyCFunction)(void (*)(void))response_walk, METH_FASTCALL, response_walk_doc},
    {"relay_response", (PyCFunction)(void (*)(void))relay_response, METH_FASTCALL, relay_response_doc},
    {"splice", (PyCFunction)(void (*)(void))splice, METH_FASTCALL, splice_doc},
    {"forbidden", (PyCFunction)(void (*)(void))forbidden, METH_FASTCALL, forbidden_doc},
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
