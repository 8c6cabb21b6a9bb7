/*
 * sipgate.sip._tag: the To-tag of sipgate's stateless responses, in C.
 *
 * to_tag(key, call_id, from_tag, branch, number) is sipgate.sip.tag's
 * pure Python to_tag, byte for byte: "sg" and the 16 hex digits of the
 * SipHash-2-4 (Aumasson and Bernstein) of
 *
 *     call_id NUL from_tag NUL branch NUL number-in-decimal
 *
 * under the 16-byte key.  A denied INVITE needs one, and after an idle
 * spell nothing of it is in the CPU's caches: this is a few hundred bytes
 * of code and no allocation but the result, where BLAKE2b through hashlib
 * was a copied hash object, a method call per step and the (unrolled)
 * compression function.  Built by `sipgate native build` with the mypyc
 * group and covered by the same freshness guard (sipgate/native.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                  \
    do {                                                          \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32); \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                    \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                    \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32); \
    } while (0)

static uint64_t
le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t
siphash24(const unsigned char *key, const unsigned char *in, size_t len)
{
    uint64_t k0 = le64(key), k1 = le64(key + 8);
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    size_t whole = len - len % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = le64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = 0; i < len % 8; i++)
        last |= (uint64_t)in[whole + i] << (8 * i);
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

PyDoc_STRVAR(to_tag_doc,
"to_tag(key, call_id, from_tag, branch, number) -> bytes\n\n"
"b\"sg\" and 16 hex digits: SipHash-2-4 under the 16-byte key of\n"
"call_id, from_tag, branch (bytes) and number (a non-negative int, in\n"
"decimal, or bytes as they are), joined with NUL bytes.");

static PyObject *
to_tag(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "to_tag() takes 5 arguments");
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        if (!PyBytes_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "to_tag(): key, call_id, from_tag and branch must be bytes");
            return NULL;
        }
    }
    if (PyBytes_GET_SIZE(args[0]) != 16) {
        PyErr_SetString(PyExc_ValueError, "to_tag(): the key must be 16 bytes");
        return NULL;
    }
    char digits[24];
    const char *number;
    Py_ssize_t number_len;
    if (PyLong_Check(args[4])) {
        unsigned long long v = PyLong_AsUnsignedLongLong(args[4]);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        char *end = digits + sizeof(digits), *p = end;
        do {
            *--p = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        number = p;
        number_len = end - p;
    } else if (PyBytes_Check(args[4])) {
        number = PyBytes_AS_STRING(args[4]);
        number_len = PyBytes_GET_SIZE(args[4]);
    } else {
        PyErr_SetString(PyExc_TypeError, "to_tag(): number must be an int or bytes");
        return NULL;
    }
    const char *parts[4] = {PyBytes_AS_STRING(args[1]), PyBytes_AS_STRING(args[2]), PyBytes_AS_STRING(args[3]),
                            number};
    Py_ssize_t sizes[4] = {PyBytes_GET_SIZE(args[1]), PyBytes_GET_SIZE(args[2]), PyBytes_GET_SIZE(args[3]),
                           number_len};
    Py_ssize_t total = sizes[0] + sizes[1] + sizes[2] + sizes[3] + 3;
    unsigned char local[512];
    unsigned char *material = total <= (Py_ssize_t)sizeof(local) ? local : PyMem_Malloc((size_t)total);
    if (material == NULL)
        return PyErr_NoMemory();
    Py_ssize_t at = 0;
    for (int i = 0; i < 4; i++) {
        if (i)
            material[at++] = 0;
        memcpy(material + at, parts[i], (size_t)sizes[i]);
        at += sizes[i];
    }
    uint64_t h = siphash24((const unsigned char *)PyBytes_AS_STRING(args[0]), material, (size_t)total);
    if (material != local)
        PyMem_Free(material);
    static const char hex[] = "0123456789abcdef";
    char out[18] = {'s', 'g'};
    for (int i = 0; i < 16; i++)
        out[2 + i] = hex[(h >> (60 - 4 * i)) & 15];
    return PyBytes_FromStringAndSize(out, sizeof(out));
}

static PyMethodDef methods[] = {
    {"to_tag", (PyCFunction)(void (*)(void))to_tag, METH_FASTCALL, to_tag_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipgate.sip._tag",
    "The To-tag of sipgate's stateless responses (SipHash-2-4), in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__tag(void)
{
    return PyModule_Create(&module);
}
