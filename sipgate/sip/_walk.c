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
    if (nargs != 3 || !PyBytes_Check(args[0]) || PyBytes_GET_SIZE(args[0]) != 256 || !PyBytes_Check(args[1])
        || PyBytes_GET_SIZE(args[1]) != 256 || !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) != LONG_KEYS) {
        PyErr_SetString(PyExc_TypeError, "configure(token: bytes[256], compact: bytes[256], long: tuple[512])");
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
arguments(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t *max_lines, Py_ssize_t *max_line)
{
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "sipgate.sip._walk: configure() first");
        return -1;
    }
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "expected (data: bytes, max_lines: int, max_line: int)");
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
    PyObject *t = end == NULL ? NULL : PyTuple_New(5);
    for (int x = 0; x < 5; x++) {
        if (t != NULL)
            PyTuple_SET_ITEM(t, x, items[x]);
        else
            Py_XDECREF(items[x]);
    }
    return t;
}

#define REFUSE do { result = Py_None; Py_INCREF(result); goto done; } while (0)

PyDoc_STRVAR(fields_doc,
"fields(data, max_lines, max_line) -> (end, line0, vias, values, at) | None\n\n"
"sipgate.sip.fast._fields_loop with max_lines = min(_MAX_LINES, max_headers + 1)\n"
"and max_line = max_header_line.");

static PyObject *
fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max_lines, max_line;
    if (arguments(args, nargs, &max_lines, &max_line) < 0)
        return NULL;
    PyObject *data = args[0];
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    PyObject *values[8] = {NULL};
    Py_ssize_t at[10] = {0};
    PyObject *vias = NULL, *result = NULL, *line0 = NULL;
    Py_ssize_t i = line_end(d, 0, n);
    if (i < 0 || i > max_line)
        Py_RETURN_NONE;
    if ((vias = PyList_New(0)) == NULL)
        return NULL;
    Py_ssize_t pos = i + 2, lineno = 0;
    int normal = 1;  /* every line so far rendered */
    while (pos + 1 >= n || d[pos] != 13 || d[pos + 1] != 10) {
        if (++lineno >= max_lines)
            REFUSE;
        Py_ssize_t k = colon_at(d, pos, n);
        if (k < 0)
            REFUSE;
        Py_ssize_t e = line_end(d, k + 1, n);
        if (e < 0 || e - pos > max_line)
            REFUSE;
        int slot = name_slot(d, pos, k);
        if (slot == PROXY_REQUIRE)
            REFUSE;
        /* (the lines a relay rewrites do not count: Max-Forwards,
         * Content-Length, the first Via) */
        if (normal && slot != 4 && slot != 5 && (slot != VIA || PyList_GET_SIZE(vias)))
            normal = rendered(d, k, e);
        if (slot != NOT_READ) {
            Py_ssize_t a = k + 1, b = e;
            trim(d, &a, &b);
            if (a == b)
                REFUSE;
            const unsigned char *v = d + a;
            if (slot == VIA) {
                if (memchr(v, ',', (size_t)(b - a)))
                    REFUSE;
                if (PyList_GET_SIZE(vias) == 0)
                    at[8] = lineno;
                PyObject *value = PyBytes_FromStringAndSize((const char *)v, b - a);
                if (value == NULL || PyList_Append(vias, value) < 0) {
                    Py_XDECREF(value);
                    goto done;
                }
                Py_DECREF(value);
            } else if (values[slot] == NULL) {
                if (slot >= 6 && memchr(v, ',', (size_t)(b - a)))
                    REFUSE;  /* (a Route or Record-Route list: the full path's) */
                if ((values[slot] = PyBytes_FromStringAndSize((const char *)v, b - a)) == NULL)
                    goto done;
                at[slot] = lineno;
            } else if (slot < 6 && !same(values[slot], v, b - a)) {
                REFUSE;  /* conflicting single-valued headers */
            } else {
                at[9] = 1;  /* a header twice: no line indexes */
            }
        }
        pos = e + 2;
    }
    if (!normal)
        at[9] = 1;
    PyObject *value_list = PyList_New(8), *at_list = PyList_New(10);
    if (value_list == NULL || at_list == NULL) {
        Py_XDECREF(value_list);
        Py_XDECREF(at_list);
        goto done;
    }
    for (int s = 0; s < 8; s++) {
        PyObject *v = values[s] ? values[s] : Py_None;
        Py_INCREF(v);
        PyList_SET_ITEM(value_list, s, v);
    }
    for (int s = 0; s < 10; s++) {
        PyObject *x = PyLong_FromSsize_t(at[s]);
        if (x == NULL) {
            Py_DECREF(value_list);
            Py_DECREF(at_list);
            goto done;
        }
        PyList_SET_ITEM(at_list, s, x);
    }
    if ((line0 = PyBytes_FromStringAndSize((const char *)d, i)) == NULL) {
        Py_DECREF(value_list);
        Py_DECREF(at_list);
        goto done;
    }
    result = tuple5(PyLong_FromSsize_t(pos - 2), line0, vias, value_list, at_list);
    line0 = vias = NULL;  /* (the tuple's now) */
done:
    for (int s = 0; s < 8; s++)
        Py_XDECREF(values[s]);
    Py_XDECREF(vias);
    Py_XDECREF(line0);
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
    if (arguments(args, nargs, &max_lines, &max_line) < 0)
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
    PyObject *value_list = PyList_New(6);
    if (value_list == NULL)
        goto done;
    for (int s = 0; s < 6; s++) {
        PyObject *v = values[s] ? values[s] : Py_None;
        Py_INCREF(v);
        PyList_SET_ITEM(value_list, s, v);
    }
    Py_ssize_t numbers[8] = {pos, vias, commas, first_at, first_colon, first_end, second_colon, second_end};
    if ((result = PyTuple_New(10)) == NULL) {
        Py_DECREF(value_list);
        goto done;
    }
    PyTuple_SET_ITEM(result, 1, value_list);
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
