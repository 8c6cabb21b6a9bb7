/*
 * sipgate.sip._tag: the To-tag of sipgate's stateless responses, in C.
 *
 * to_tag(key, call_id, from_tag, branch, number) is sipgate.sip.tag's
 * pure Python to_tag, byte for byte: "sg" and the hex digest of the keyed
 * BLAKE2b (RFC 7693) with an 8-byte digest of
 *
 *     call_id NUL from_tag NUL branch NUL number-in-decimal
 *
 * A denied INVITE needs one, and after an idle spell nothing of it is in
 * the CPU's caches.  hashlib's BLAKE2b is a hash object copied per tag,
 * three method calls and an unrolled compression function of ~8 KiB; this
 * is one call, no allocation but the result, and the compression as a
 * loop over one round's code (a tag is one block after the key's, so code
 * size matters beside the instructions).
 *
 * keyed_hex(key, size, material) is the same keyed BLAKE2b for the Via
 * branch of a relayed request (sipgate.sip.fast._keyed_hex), hex-encoded,
 * with the rounds unrolled: that path runs warm, under load.  Built by
 * `sipgate native build` with the mypyc group and covered by the same
 * freshness guard (sipgate/native.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

static const uint64_t IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

/* The message schedule of rounds 0-9; rounds 10 and 11 repeat 0 and 1. */
static const unsigned char SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static uint64_t
rotr(uint64_t x, int n)
{
    return (x >> n) | (x << (64 - n));
}

/* The start of a compression, shared by both forms below: the block's
 * sixteen little-endian words into m, the working state v from h, the
 * byte count ``t`` and the last-block flag. */
static void
start(uint64_t m[16], uint64_t v[16], const uint64_t h[8], const unsigned char block[128], uint64_t t, int last)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(m, block, 16 * sizeof(uint64_t));  /* (the machine's words are little-endian too) */
#else
    for (int i = 0; i < 16; i++) {
        uint64_t w = 0;
        for (int j = 7; j >= 0; j--)
            w = (w << 8) | block[8 * i + j];
        m[i] = w;
    }
#endif
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = IV[i];
    }
    v[12] ^= t;
    if (last)
        v[14] = ~v[14];
}

/* The end of a compression: v folded into h. */
static void
finish(uint64_t h[8], const uint64_t v[16])
{
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* G, the mixing of four words of v with two message words, and a round,
 * eight Gs over the columns and the diagonals of v; ``s`` is the round's
 * row of SIGMA, the order it takes the message words in. */
#define G(s, i, a, b, c, d)                                 \
    do {                                                    \
        a = a + b + m[(s)[2 * i]];                          \
        d = rotr(d ^ a, 32);                                \
        c = c + d;                                          \
        b = rotr(b ^ c, 24);                                \
        a = a + b + m[(s)[2 * i + 1]];                      \
        d = rotr(d ^ a, 16);                                \
        c = c + d;                                          \
        b = rotr(b ^ c, 63);                                \
    } while (0)
#define ROUND(s)                                            \
    do {                                                    \
        G(s, 0, v[0], v[4], v[8], v[12]);                   \
        G(s, 1, v[1], v[5], v[9], v[13]);                   \
        G(s, 2, v[2], v[6], v[10], v[14]);                  \
        G(s, 3, v[3], v[7], v[11], v[15]);                  \
        G(s, 4, v[0], v[5], v[10], v[15]);                  \
        G(s, 5, v[1], v[6], v[11], v[12]);                  \
        G(s, 6, v[2], v[7], v[8], v[13]);                   \
        G(s, 7, v[3], v[4], v[9], v[14]);                   \
    } while (0)

/* One 128-byte block into h; ``t`` bytes hashed so far, this block
 * included.  The twelve rounds as a loop over one round's code (~1.1 KiB),
 * each reading its row of SIGMA: ~2,400 instructions a block.  The To-tag
 * uses it: a denied INVITE runs it, and after an idle spell none of it is
 * in the CPU's caches, so its size counts as well as its instructions.
 * (A loop over the Gs too, v's indexes read from a table, was ~400 bytes
 * but ~3,700 instructions: v no longer fits in registers.) */
static void
compress(uint64_t h[8], const unsigned char block[128], uint64_t t, int last)
{
    uint64_t m[16], v[16];
    start(m, v, h, block, t, last);
    for (int r = 0; r < 12; r++) {
        const unsigned char *s = SIGMA[r < 10 ? r : r - 10];
        ROUND(s);
    }
    finish(h, v);
}

/* compress() with the rounds written out too, so every SIGMA index is the
 * compiler's constant: ~1,700 instructions a block, ~5 KiB more code.  The
 * relay path's branch uses it: warm under load, where instructions count. */
static void
compress_unrolled(uint64_t h[8], const unsigned char block[128], uint64_t t, int last)
{
    uint64_t m[16], v[16];
    start(m, v, h, block, t, last);
    ROUND(SIGMA[0]); ROUND(SIGMA[1]); ROUND(SIGMA[2]); ROUND(SIGMA[3]); ROUND(SIGMA[4]); ROUND(SIGMA[5]);
    ROUND(SIGMA[6]); ROUND(SIGMA[7]); ROUND(SIGMA[8]); ROUND(SIGMA[9]); ROUND(SIGMA[0]); ROUND(SIGMA[1]);
    finish(h, v);
}

typedef void (*compressor)(uint64_t h[8], const unsigned char block[128], uint64_t t, int last);

/* The chain value after the key block, for the last key and digest size
 * a message of at least one byte was hashed under. Keyed BLAKE2b
 * compresses the key, zero-padded, as a block of its own, the same block
 * for every message under that key: sipgate's tags and branches (one
 * secret, a message of one block) take one compression instead of two.
 * Checked against the key's bytes on every call, so a new secret (a
 * reload) only costs the next call the key block again. A keylen of 0:
 * nothing kept yet (an unkeyed hash has no key block). Every caller holds
 * the GIL. */
static struct {
    size_t keylen, outlen;
    unsigned char key[64];
    uint64_t h[8];
} after_key;

/* BLAKE2b of in[0:len] with an ``outlen``-byte digest (1..64) under
 * key[0:keylen] (<= 64), compressing with ``compress``. */
static void
blake2b_with(compressor compress, const unsigned char *key, size_t keylen, const unsigned char *in, size_t len,
             unsigned char *out, size_t outlen)
{
    uint64_t h[8];
    unsigned char block[128];
    uint64_t t = 0;
    if (keylen && len && after_key.keylen == keylen && after_key.outlen == outlen
            && memcmp(after_key.key, key, keylen) == 0) {
        memcpy(h, after_key.h, sizeof(h));
        t = 128;
    } else {
        memcpy(h, IV, sizeof(h));
        h[0] ^= 0x01010000ULL ^ ((uint64_t)keylen << 8) ^ (uint64_t)outlen;
        if (keylen) {
            memset(block, 0, sizeof(block));
            memcpy(block, key, keylen);
            t = 128;
            compress(h, block, t, len == 0);
            if (len) {  /* (not the last block: the state every message under this key starts from) */
                after_key.keylen = keylen;
                after_key.outlen = outlen;
                memcpy(after_key.key, key, keylen);
                memcpy(after_key.h, h, sizeof(h));
            }
        }
    }
    /* Every full block but the last; the last (full or not) flagged. */
    while (len > 128) {
        t += 128;
        compress(h, in, t, 0);
        in += 128;
        len -= 128;
    }
    if (len || !keylen) {
        memset(block, 0, sizeof(block));
        memcpy(block, in, len);
        t += len;
        compress(h, block, t, 1);
    }
    for (size_t i = 0; i < outlen; i++)
        out[i] = (unsigned char)(h[i / 8] >> (8 * (i % 8)));
}

PyDoc_STRVAR(to_tag_doc,
"to_tag(key, call_id, from_tag, branch, number) -> bytes\n\n"
"b\"sg\" and the hex digest of BLAKE2b (8-byte digest) under key (at most\n"
"64 bytes) of call_id, from_tag, branch (bytes) and number (a non-negative\n"
"int, in decimal, or bytes as they are), joined with NUL bytes.");

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
    if (PyBytes_GET_SIZE(args[0]) > 64) {
        PyErr_SetString(PyExc_ValueError, "to_tag(): the key must be at most 64 bytes");
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
    unsigned char digest[8];
    blake2b_with(compress, (const unsigned char *)PyBytes_AS_STRING(args[0]), (size_t)PyBytes_GET_SIZE(args[0]),
                 material, (size_t)total, digest, sizeof(digest));
    if (material != local)
        PyMem_Free(material);
    static const char hex[] = "0123456789abcdef";
    char out[18] = {'s', 'g'};
    for (int i = 0; i < 8; i++) {
        out[2 + 2 * i] = hex[digest[i] >> 4];
        out[3 + 2 * i] = hex[digest[i] & 15];
    }
    return PyBytes_FromStringAndSize(out, sizeof(out));
}

PyDoc_STRVAR(keyed_hex_doc,
"keyed_hex(key, size, material) -> bytes\n\n"
"blake2b(material, digest_size=size, key=key).hexdigest().encode(): the Via\n"
"branch sipgate gives a relayed request (sipgate.sip.fast._keyed_hex), in one\n"
"call where hashlib takes a state copy and three method calls.");

static PyObject *
keyed_hex(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyLong_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "keyed_hex(key: bytes, size: int, material: bytes)");
        return NULL;
    }
    long size = PyLong_AsLong(args[1]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 1 || size > 64 || PyBytes_GET_SIZE(args[0]) > 64) {
        PyErr_SetString(PyExc_ValueError, "keyed_hex(): size must be 1..64 and the key at most 64 bytes");
        return NULL;
    }
    unsigned char digest[64];
    blake2b_with(compress_unrolled, (const unsigned char *)PyBytes_AS_STRING(args[0]),
                 (size_t)PyBytes_GET_SIZE(args[0]), (const unsigned char *)PyBytes_AS_STRING(args[2]),
                 (size_t)PyBytes_GET_SIZE(args[2]), digest, (size_t)size);
    static const char hex[] = "0123456789abcdef";
    char out[128];
    for (long i = 0; i < size; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    return PyBytes_FromStringAndSize(out, 2 * size);
}

static PyMethodDef methods[] = {
    {"to_tag", (PyCFunction)(void (*)(void))to_tag, METH_FASTCALL, to_tag_doc},
    {"keyed_hex", (PyCFunction)(void (*)(void))keyed_hex, METH_FASTCALL, keyed_hex_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipgate.sip._tag",
    "The To-tag of sipgate's stateless responses (keyed BLAKE2b), in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__tag(void)
{
    return PyModule_Create(&module);
}
