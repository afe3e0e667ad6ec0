/* The compiled counting loop of qtool.calib.binning (see that module for the bin rule).
 *
 * count_float32(values, start, reciprocal, limit, counts) -> (stop, top)
 *
 * Adds bin floor(fabs((double)v) * reciprocal) of each value from `start` on to `counts` (int64)
 * and returns where it stopped and the largest |v| it counted. It stops at the first value that
 * is not below `limit` (NaN, Inf or a value beyond the counts), which the caller handles. Four
 * interleaved count arrays keep runs of one bin (a ReLU's zeros) from waiting on one memory
 * location. The GIL is released.
 *
 * Built as an optional extension: without a compiler, qtool counts with numpy, exactly the same.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Values per block: the two passes over a block read it from the L1 cache. */
#define BLOCK 2048

/* The bin of one value given its float32 bit pattern: floor(|x| * reciprocal) in float64. */
static inline int64_t
index_of(uint32_t pattern, double reciprocal)
{
    float magnitude;
    pattern &= 0x7fffffffu;
    memcpy(&magnitude, &pattern, sizeof magnitude);
    return (int64_t)((double)magnitude * reciprocal);
}

static int
buffer_of(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, const char *codes,
          const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        return -1;
    }
    const char *format = view->format ? view->format : "B";
    if (format[0] == '<' || format[0] == '=' || format[0] == '@') {
        format++;
    }
    if (view->itemsize != itemsize || strlen(format) != 1 || !strchr(codes, format[0])) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous array of %s", what,
                     itemsize == 4 ? "float32" : "int64");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *
count_float32(PyObject *self, PyObject *args)
{
    PyObject *values_obj, *counts_obj;
    Py_ssize_t start;
    double reciprocal, limit;
    Py_buffer values, counts;

    if (!PyArg_ParseTuple(args, "OnddO", &values_obj, &start, &reciprocal, &limit, &counts_obj)) {
        return NULL;
    }
    if (buffer_of(values_obj, &values, 0, 4, "f", "values") < 0) {
        return NULL;
    }
    if (buffer_of(counts_obj, &counts, 1, 8, "lq", "counts") < 0) {
        PyBuffer_Release(&values);
        return NULL;
    }
    const Py_ssize_t n = values.len / 4;
    const Py_ssize_t nbins = counts.len / 8;
    if (start < 0 || start > n) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&counts);
        return PyErr_Format(PyExc_ValueError, "start %zd is outside 0..%zd", start, n);
    }
    int64_t *lanes = PyMem_RawCalloc(4 * (size_t)(nbins ? nbins : 1), sizeof(int64_t));
    if (lanes == NULL) {
        PyBuffer_Release(&values);
        PyBuffer_Release(&counts);
        return PyErr_NoMemory();
    }
    const uint32_t *bits = values.buf;
    int64_t *out = counts.buf;
    /* For |x| >= 0 the float order is the order of the bit patterns, and NaN's patterns lie above
     * Inf's: "a < limit" is one unsigned compare against the smallest float32 >= limit. */
    float bound = (float)limit;
    if ((double)bound < limit) {
        bound = nextafterf(bound, INFINITY);
    }
    uint32_t bound_bits;
    memcpy(&bound_bits, &bound, sizeof bound_bits);
    uint32_t top_bits = 0;
    Py_ssize_t i = start;

    Py_BEGIN_ALLOW_THREADS
    int64_t *l0 = lanes, *l1 = lanes + nbins, *l2 = lanes + 2 * nbins, *l3 = lanes + 3 * nbins;
    while (i < n) {
        Py_ssize_t end = n - i < BLOCK ? n : i + BLOCK;
        int stopped = 0;
        /* One branch-free (vectorisable) pass finds the block's largest |x| ... */
        uint32_t block_top = 0;
        for (Py_ssize_t j = i; j < end; j++) {
            uint32_t b = bits[j] & 0x7fffffffu;
            block_top = b > block_top ? b : block_top;
        }
        if (block_top >= bound_bits) { /* ... and a block holding a value without a bin ends here */
            Py_ssize_t j = i;
            while ((bits[j] & 0x7fffffffu) < bound_bits) {
                j++;
            }
            block_top = 0;
            for (Py_ssize_t k = i; k < j; k++) {
                uint32_t b = bits[k] & 0x7fffffffu;
                block_top = b > block_top ? b : block_top;
            }
            end = j;
            stopped = 1;
        }
        top_bits = block_top > top_bits ? block_top : top_bits;
        /* the counting pass needs no checks */
        Py_ssize_t j = i;
        for (; j + 4 <= end; j += 4) {
            l0[index_of(bits[j], reciprocal)]++;
            l1[index_of(bits[j + 1], reciprocal)]++;
            l2[index_of(bits[j + 2], reciprocal)]++;
            l3[index_of(bits[j + 3], reciprocal)]++;
        }
        for (; j < end; j++) {
            l0[index_of(bits[j], reciprocal)]++;
        }
        i = end;
        if (stopped) {
            break;
        }
    }
    for (Py_ssize_t k = 0; k < nbins; k++) {
        out[k] += l0[k] + l1[k] + l2[k] + l3[k];
    }
    Py_END_ALLOW_THREADS

    float top;
    memcpy(&top, &top_bits, sizeof top);
    PyMem_RawFree(lanes);
    PyBuffer_Release(&values);
    PyBuffer_Release(&counts);
    return Py_BuildValue("nd", i, (double)top);
}

static PyMethodDef methods[] = {
    {"count_float32", count_float32, METH_VARARGS,
     "count_float32(values, start, reciprocal, limit, counts) -> (stop, top)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_binning", "Compiled |x| bin counting (see qtool.calib.binning).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__binning(void)
{
    return PyModule_Create(&module);
}
