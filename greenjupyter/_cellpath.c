/* The cell path's counter reads and journal entry, made without releasing the GIL.
 *
 * In a kernel, the first call after IPython's own work that releases the GIL costs several
 * microseconds more than the read it wraps (bench/cell_path_parts.py), and a cell's edge makes
 * one per counter. Reading a RAPL counter (the kernel reads an MSR) or appending a small entry
 * to a file in the page cache takes about a microsecond, so holding the GIL through it is cheaper
 * for everyone. greenjupyter/fastpath.py has the same functions in Python, for where this module
 * was not built; both give the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COUNTER_BYTES 32  /* an energy_uj text is at most 20 digits and a newline */
#define MAX_COUNTERS 64
#define STACK_ENTRY 4096
#define MAX_PARTS 32
#define MAX_TEXT 1024  /* a text part keeps at most this many characters, then bytes */

static uint32_t crc_table[256];

static void make_crc_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* CRC-32 as zlib.crc32 computes it. */
static uint32_t crc32_of(const unsigned char *data, size_t length) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < length; i++)
        c = crc_table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.perf_counter's clock on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

PyDoc_STRVAR(read_counters_doc,
"read_counters(fds) -> (before, after, texts)\n\n"
"Read up to 32 bytes at offset 0 of each file descriptor in the tuple ``fds``; return the\n"
"perf_counter time before and after the reads, and the texts joined by NUL bytes (an empty\n"
"text where a read failed) after their length (2 bytes, little-endian), as the journal keeps them.");

static PyObject *read_counters(PyObject *Py_UNUSED(module), PyObject *fds) {
    if (!PyTuple_Check(fds)) {
        PyErr_SetString(PyExc_TypeError, "read_counters() takes a tuple of file descriptors");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(fds);
    if (n > MAX_COUNTERS) {
        PyErr_Format(PyExc_ValueError, "read_counters() reads at most %d counters, not %zd", MAX_COUNTERS, n);
        return NULL;
    }
    int numbers[MAX_COUNTERS];
    for (Py_ssize_t i = 0; i < n; i++) {
        long number = PyLong_AsLong(PyTuple_GET_ITEM(fds, i));
        if (number == -1 && PyErr_Occurred())
            return NULL;
        if (number < 0 || number > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "read_counters() takes file descriptors, not %ld", number);
            return NULL;
        }
        numbers[i] = (int)number;
    }
    char texts[2 + MAX_COUNTERS * (COUNTER_BYTES + 1)];
    size_t used = 2;
    double before = now();
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i > 0)
            texts[used++] = '\0';
        ssize_t got = pread(numbers[i], texts + used, COUNTER_BYTES, 0);
        if (got > 0)
            used += (size_t)got;
    }
    double after = now();
    texts[0] = (char)((used - 2) & 0xFF);
    texts[1] = (char)((used - 2) >> 8);
    return Py_BuildValue("(ddy#)", before, after, texts, (Py_ssize_t)used);
}

/* An entry's pieces, gathered from the ``parts`` tuple: bytes as they are; a str as its UTF-8 (of its
 * first MAX_TEXT characters, cut to MAX_TEXT bytes) after a 2-byte length; None as the length 0xFFFF. */
typedef struct {
    Py_ssize_t count;
    PyObject *pieces[MAX_PARTS];  /* each holds what ``data`` points into */
    const char *data[MAX_PARTS];
    size_t size[MAX_PARTS];
    char prefixes[MAX_PARTS][2];
    int prefixed[MAX_PARTS];
    size_t payload;
} Parts;

static void release_parts(Parts *parts) {
    for (Py_ssize_t i = 0; i < parts->count; i++)
        Py_DECREF(parts->pieces[i]);
    parts->count = 0;
}

/* Point ``parts`` entry ``i`` at the bytes ``part`` stands for; return 0, or -1 with an exception set.
 * A short ASCII str (a cell's id, most cells' code) is used in place; others are encoded. */
static int add_part(Parts *parts, Py_ssize_t i, PyObject *part) {
    parts->prefixed[i] = 0;
    if (PyBytes_Check(part)) {
        parts->pieces[i] = Py_NewRef(part);
        parts->data[i] = PyBytes_AS_STRING(part);
        parts->size[i] = (size_t)PyBytes_GET_SIZE(part);
        return 0;
    }
    size_t length = 0;
    if (part == Py_None) {
        parts->pieces[i] = Py_NewRef(part);
        parts->data[i] = "";
        parts->prefixes[i][0] = parts->prefixes[i][1] = (char)0xFF;
    } else if (!PyUnicode_Check(part)) {
        PyErr_Format(PyExc_TypeError, "entry parts must be bytes, str or None, not %.100s", Py_TYPE(part)->tp_name);
        return -1;
    } else if (PyUnicode_READY(part) < 0) {
        return -1;
    } else if (PyUnicode_IS_ASCII(part)) {  /* one byte per character: the first MAX_TEXT of them */
        length = (size_t)PyUnicode_GET_LENGTH(part);
        if (length > MAX_TEXT)
            length = MAX_TEXT;
        parts->pieces[i] = Py_NewRef(part);
        parts->data[i] = (const char *)PyUnicode_DATA(part);
    } else {
        PyObject *head = PyUnicode_Substring(part, 0, MAX_TEXT);
        if (head == NULL)
            return -1;
        PyObject *data = PyUnicode_AsEncodedString(head, "utf-8", "replace");
        Py_DECREF(head);
        if (data == NULL)
            return -1;
        length = (size_t)PyBytes_GET_SIZE(data);
        if (length > MAX_TEXT)
            length = MAX_TEXT;
        parts->pieces[i] = data;
        parts->data[i] = PyBytes_AS_STRING(data);
    }
    if (part != Py_None) {
        parts->prefixes[i][0] = (char)(length & 0xFF);
        parts->prefixes[i][1] = (char)(length >> 8);
    }
    parts->size[i] = length;
    parts->prefixed[i] = 1;
    return 0;
}

/* Gather ``tuple`` into ``parts``; return the whole entry's size, or 0 with an exception set. */
static size_t gather(PyObject *tuple, Parts *parts) {
    parts->count = 0;
    parts->payload = 0;
    Py_ssize_t count = PyTuple_GET_SIZE(tuple);
    if (count > MAX_PARTS) {
        PyErr_Format(PyExc_ValueError, "an entry has at most %d parts, not %zd", MAX_PARTS, count);
        return 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (add_part(parts, i, PyTuple_GET_ITEM(tuple, i)) < 0) {
            release_parts(parts);
            return 0;
        }
        parts->count++;
        parts->payload += parts->size[i] + (parts->prefixed[i] ? 2 : 0);
    }
    if (parts->payload > UINT32_MAX - 16) {
        release_parts(parts);
        PyErr_SetString(PyExc_ValueError, "entry too large");
        return 0;
    }
    return parts->payload + 12;
}

/* Write the framed entry into ``out`` (room for the size gather() returned). */
static void fill(unsigned char *out, const char *magic, const Parts *parts) {
    memcpy(out, magic, 4);
    for (int k = 0; k < 4; k++)
        out[4 + k] = (unsigned char)((uint32_t)parts->payload >> (8 * k));
    size_t at = 8;
    for (Py_ssize_t i = 0; i < parts->count; i++) {
        if (parts->prefixed[i]) {
            memcpy(out + at, parts->prefixes[i], 2);
            at += 2;
        }
        memcpy(out + at, parts->data[i], parts->size[i]);
        at += parts->size[i];
    }
    uint32_t crc = crc32_of(out + 8, parts->payload);
    for (int k = 0; k < 4; k++)
        out[at + k] = (unsigned char)(crc >> (8 * k));
}

PyDoc_STRVAR(append_doc,
"append(fd, magic, parts)\n\n"
"Write one framed entry with a single write(): the 4-byte ``magic``, the payload's length\n"
"(uint32, little-endian), the payload and its CRC-32 (uint32, little-endian). The payload is the\n"
"items of the tuple ``parts`` in turn: bytes as they are; a str as its UTF-8 (of its first 1024\n"
"characters, cut to 1024 bytes) after a 2-byte length; None as the length 0xFFFF alone.\n"
"Raise OSError unless the entry was written whole.");

static PyObject *append(PyObject *Py_UNUSED(module), PyObject *args) {
    int fd;
    const char *magic;
    Py_ssize_t magic_length;
    PyObject *tuple;
    if (!PyArg_ParseTuple(args, "iy#O!:append", &fd, &magic, &magic_length, &PyTuple_Type, &tuple))
        return NULL;
    if (magic_length != 4)
        return PyErr_Format(PyExc_ValueError, "append() takes a 4-byte magic, not %zd bytes", magic_length);
    Parts parts;
    size_t total = gather(tuple, &parts);
    if (total == 0)
        return NULL;
    unsigned char stack[STACK_ENTRY];
    unsigned char *entry = total <= sizeof stack ? stack : PyMem_Malloc(total);
    if (entry == NULL) {
        release_parts(&parts);
        return PyErr_NoMemory();
    }
    fill(entry, magic, &parts);
    release_parts(&parts);
    ssize_t written;
    do {
        written = write(fd, entry, total);
    } while (written < 0 && errno == EINTR);
    int error = errno;
    if (entry != stack)
        PyMem_Free(entry);
    if (written < 0) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if ((size_t)written != total)
        return PyErr_Format(PyExc_OSError, "short write: %zd of %zu bytes (disk full?)", written, total);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(store_doc,
"store(buffer, offset, magic, parts) -> int\n\n"
"Copy the framed entry ``append`` would write into the writable ``buffer`` (a shared mapping of\n"
"a journal file) at ``offset``; return the offset after it, or -1 (copying nothing) when it\n"
"does not fit.");

static PyObject *store(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer buffer;
    Py_ssize_t offset;
    const char *magic;
    Py_ssize_t magic_length;
    PyObject *tuple;
    if (!PyArg_ParseTuple(args, "w*ny#O!:store", &buffer, &offset, &magic, &magic_length, &PyTuple_Type, &tuple))
        return NULL;
    PyObject *result = NULL;
    if (magic_length != 4 || offset < 0 || offset > buffer.len) {
        PyErr_Format(PyExc_ValueError, "store() takes a 4-byte magic and an offset inside the buffer");
        goto done;
    }
    Parts parts;
    size_t total = gather(tuple, &parts);
    if (total == 0)
        goto done;
    if (total > (size_t)(buffer.len - offset)) {
        release_parts(&parts);
        result = PyLong_FromLong(-1);
        goto done;
    }
    fill((unsigned char *)buffer.buf + offset, magic, &parts);
    release_parts(&parts);
    result = PyLong_FromSsize_t(offset + (Py_ssize_t)total);
done:
    PyBuffer_Release(&buffer);
    return result;
}

static PyMethodDef methods[] = {
    {"read_counters", read_counters, METH_O, read_counters_doc},
    {"append", append, METH_VARARGS, append_doc},
    {"store", store, METH_VARARGS, store_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "greenjupyter._cellpath",
    "The cell path's system calls, made without releasing the GIL (see fastpath.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cellpath(void) {
    make_crc_table();
    return PyModule_Create(&module_def);
}
