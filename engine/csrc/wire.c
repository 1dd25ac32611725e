/* engine._wire: a Media Stream's WebSocket frames and its media messages, read in one call per socket read.
 *
 * A call's socket carries 100 media messages a second (20 ms of each track); in Python each took a frame parse,
 * an unmask, a UTF-8 decode, a JSON parse and a base64 decode, through a dozen calls. ``scan`` does that work
 * for every frame of a read that is a media message exactly as Twilio sends one, and stops at the first frame
 * that is anything else, for the Python code to handle as it always did (api/wsprotocol.py, engine/codec.py).
 *
 * It takes only what it can prove: a media message here gives the tuple engine.codec.decode's Media would hold,
 * or the message goes to codec.decode (tests/test_wire.py holds the two to each other). Accepted:
 * - a final, masked text frame without extension bits, at most ``limit`` bytes (ws_max_size) and at most
 *   ``max_message`` bytes (the codec's own limit), its length in 7 or 16 bits;
 * - JSON: an object of exactly the members event ("media"), sequenceNumber, streamSid and media, the last an
 *   object of exactly track, chunk, timestamp and payload, in any order, each a string of printable ASCII
 *   without escapes, JSON whitespace anywhere JSON allows it;
 * - sequenceNumber, chunk and timestamp of 1 to 12 digits, chunk at least 1, timestamp at most 24 h;
 *   streamSid at most 256 characters; a track codec.decode knows (inbound, outbound, and their _track forms);
 * - a payload of 4 to 4096 base64 characters, a multiple of 4, '=' only as the last one or two, decoding to at
 *   least one byte (strict base64 as binascii.a2b_base64(strict_mode=True) reads it).
 * Anything else (another opcode, a fragment, a key out of place, a number, an escape, a byte over 0x7f) ends the
 * scan at that frame. Every read is bounded by the frame's length; nothing is written into the buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

enum { NEED_MORE = 0, OTHER = 1, HAND_OVER = 2 }; /* why a scan stopped */

#define MAX_TIMESTAMP_MS 86400000LL /* engine/codec.py's MAX_TIMESTAMP_MS */
#define MAX_SID 256
#define MAX_PAYLOAD_CHARS 4096
#define MAX_DIGITS 12

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
} span;

static signed char b64[256];
static PyObject *inbound, *outbound; /* the track names, shared by every tuple */

static inline int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static inline void skip_ws(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i) {
    while (*i < n && is_ws(s[*i])) (*i)++;
}

/* A JSON string at s[*i] of printable ASCII without escapes: its contents into out, *i past its closing quote */
static int plain_string(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, span *out) {
    Py_ssize_t j = *i;
    if (j >= n || s[j] != '"') return 0;
    Py_ssize_t start = ++j;
    while (j < n && s[j] != '"') {
        if (s[j] == '\\' || s[j] < 0x20 || s[j] >= 0x7f) return 0;
        j++;
    }
    if (j >= n) return 0;
    out->p = s + start;
    out->n = j - start;
    *i = j + 1;
    return 1;
}

static inline int is(span v, const char *literal) {
    size_t n = strlen(literal);
    return (size_t)v.n == n && memcmp(v.p, literal, n) == 0;
}

static const char *const TOP[] = {"event", "sequenceNumber", "streamSid", "media"};
static const char *const BODY[] = {"track", "chunk", "timestamp", "payload"};
#define KEYS 4
#define NESTED 3 /* TOP[NESTED] is the object BODY describes */

/* An object at s[*i] holding each of names[0..KEYS) once and nothing else, every value a plain string, except
 * that with body != NULL the member names[NESTED] is such an object of BODY, its values into body */
static int object(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, const char *const *names, span *values,
                  span *body) {
    Py_ssize_t j = *i;
    unsigned seen = 0;
    skip_ws(s, n, &j);
    if (j >= n || s[j] != '{') return 0;
    j++;
    for (;;) {
        span key;
        skip_ws(s, n, &j);
        if (!plain_string(s, n, &j, &key)) return 0;
        skip_ws(s, n, &j);
        if (j >= n || s[j] != ':') return 0;
        j++;
        skip_ws(s, n, &j);
        int k = 0;
        while (k < KEYS && !is(key, names[k])) k++;
        if (k == KEYS || (seen >> k) & 1u) return 0;
        seen |= 1u << k;
        if (body != NULL && k == NESTED) {
            if (!object(s, n, &j, BODY, body, NULL)) return 0;
        } else if (!plain_string(s, n, &j, &values[k])) {
            return 0;
        }
        skip_ws(s, n, &j);
        if (j < n && s[j] == ',') {
            j++;
            continue;
        }
        if (j < n && s[j] == '}') break;
        return 0;
    }
    if (seen != (1u << KEYS) - 1) return 0;
    *i = j + 1;
    return 1;
}

static int number(span v, long long *out) {
    if (v.n < 1 || v.n > MAX_DIGITS) return 0;
    long long x = 0;
    for (Py_ssize_t k = 0; k < v.n; k++) {
        if (v.p[k] < '0' || v.p[k] > '9') return 0;
        x = x * 10 + (v.p[k] - '0');
    }
    *out = x;
    return 1;
}

/* Strict base64 into a new bytes object; 0 (no error set) if v is not such base64, -1 on an error */
static int base64(span v, PyObject **out) {
    if (v.n < 4 || v.n > MAX_PAYLOAD_CHARS || v.n % 4 != 0) return 0;
    Py_ssize_t pad = v.p[v.n - 1] == '=' ? (v.p[v.n - 2] == '=' ? 2 : 1) : 0;
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, v.n / 4 * 3 - pad);
    if (bytes == NULL) return -1;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(bytes);
    for (Py_ssize_t q = 0; q < v.n; q += 4) {
        int last = q + 4 == v.n;
        int a = b64[v.p[q]], b = b64[v.p[q + 1]];
        int c = last && pad == 2 ? 0 : b64[v.p[q + 2]];
        int d = last && pad >= 1 ? 0 : b64[v.p[q + 3]];
        if ((a | b | c | d) < 0) {
            Py_DECREF(bytes);
            return 0;
        }
        uint32_t word = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        *o++ = (unsigned char)(word >> 16);
        if (!last || pad < 2) *o++ = (unsigned char)(word >> 8);
        if (!last || pad < 1) *o++ = (unsigned char)word;
    }
    *out = bytes;
    return 1;
}

/* One media message's text -> (sequence, stream_sid, track, chunk, timestamp_ms, payload): engine.codec.decode's
 * Media, field for field; Py_None (a new reference) if the text is anything else; NULL on an error */
static PyObject *media(const unsigned char *s, Py_ssize_t n) {
    span top[KEYS], body[KEYS];
    Py_ssize_t i = 0;
    if (!object(s, n, &i, TOP, top, body)) Py_RETURN_NONE;
    skip_ws(s, n, &i);
    if (i != n || !is(top[0], "media")) Py_RETURN_NONE;
    long long seq, chunk, at;
    if (!number(top[1], &seq) || !number(body[1], &chunk) || !number(body[2], &at)) Py_RETURN_NONE;
    if (chunk < 1 || at > MAX_TIMESTAMP_MS || top[2].n > MAX_SID) Py_RETURN_NONE;
    PyObject *track;
    if (is(body[0], "inbound") || is(body[0], "inbound_track"))
        track = inbound;
    else if (is(body[0], "outbound") || is(body[0], "outbound_track"))
        track = outbound;
    else
        Py_RETURN_NONE;
    PyObject *payload = NULL;
    int decoded = base64(body[3], &payload);
    if (decoded < 0) return NULL;
    if (decoded == 0) Py_RETURN_NONE;
    PyObject *sid = PyUnicode_DecodeASCII((const char *)top[2].p, top[2].n, NULL), *item = NULL;
    if (sid != NULL) item = Py_BuildValue("(LOOLLO)", seq, sid, track, chunk, at, payload);
    Py_XDECREF(sid);
    Py_DECREF(payload);
    return item;
}

/* scan(buf, at, limit, max_message) -> (at, media, stopped): from offset ``at`` of ``buf`` (a read's unparsed
 * bytes, at a frame boundary), the media messages of the frames that are one, in order, until a frame that is
 * not (stopped OTHER: it starts at the returned offset, for the caller to handle), a frame the caller's parser
 * hands to websockets' (HAND_OVER, as api/wsprotocol.py's does: a fragment, extension bits, no mask, a close,
 * 64 KiB or more, over ``limit``) or the end of the whole frames (NEED_MORE). */
static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t at, limit, max_message;
    if (!PyArg_ParseTuple(args, "y*nnn", &view, &at, &limit, &max_message)) return NULL;
    const unsigned char *buf = view.buf;
    const Py_ssize_t end = view.len;
    PyObject *found = PyList_New(0), *result = NULL;
    unsigned char *text = NULL;
    Py_ssize_t capacity = 0;
    int stopped = NEED_MORE;
    if (found == NULL) goto done;
    if (at < 0 || at > end) {
        PyErr_SetString(PyExc_ValueError, "scan: offset outside the buffer");
        goto done;
    }
    while (end - at >= 6) {
        unsigned char head = buf[at], second = buf[at + 1];
        int opcode = head & 0x0F;
        Py_ssize_t length = second & 0x7F, start = at + 6;
        if ((head & 0xF0) != 0x80 || !(second & 0x80) || !(opcode == 1 || opcode == 2 || opcode == 9 || opcode == 10)) {
            stopped = HAND_OVER;
            break;
        }
        if (length == 126) {
            if (end - at < 8) break;
            length = (Py_ssize_t)buf[at + 2] << 8 | buf[at + 3];
            start = at + 8;
        } else if (length == 127) {
            stopped = HAND_OVER;
            break;
        }
        if (length > limit || (opcode >= 8 && length > 125)) {
            stopped = HAND_OVER;
            break;
        }
        if (end - start < length) break;
        if (opcode != 1 || length > max_message) {
            stopped = OTHER;
            break;
        }
        if (length > capacity) {
            PyMem_Free(text);
            capacity = length;
            text = PyMem_Malloc((size_t)(capacity > 0 ? capacity : 1));
            if (text == NULL) {
                PyErr_NoMemory();
                goto done;
            }
        }
        const unsigned char *mask = buf + start - 4, *data = buf + start;
        for (Py_ssize_t k = 0; k < length; k++) text[k] = data[k] ^ mask[k & 3];
        PyObject *item = media(text, length);
        if (item == NULL) goto done;
        if (item == Py_None) {
            Py_DECREF(item);
            stopped = OTHER;
            break;
        }
        int appended = PyList_Append(found, item);
        Py_DECREF(item);
        if (appended < 0) goto done;
        at = start + length;
    }
    result = Py_BuildValue("(nOi)", at, found, stopped);
done:
    PyMem_Free(text);
    Py_XDECREF(found);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "A read's media messages, up to its first other frame; see engine/csrc/wire.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_wire", "Media Stream frames read in C.", -1, methods};

PyMODINIT_FUNC PyInit__wire(void) {
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(b64, -1, sizeof b64);
    for (int k = 0; k < 64; k++) b64[(unsigned char)alphabet[k]] = (signed char)k;
    if (inbound == NULL && (inbound = PyUnicode_InternFromString("inbound")) == NULL) return NULL;
    if (outbound == NULL && (outbound = PyUnicode_InternFromString("outbound")) == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "NEED_MORE", NEED_MORE) < 0 || PyModule_AddIntConstant(m, "OTHER", OTHER) < 0 ||
        PyModule_AddIntConstant(m, "HAND_OVER", HAND_OVER) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
