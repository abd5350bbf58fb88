/* ONNX models written (nnr.onnx.export): Lua describes the graph as JSON and hands the initializers as
 * tensors; this builds the ModelProto of data/proto/onnx.proto, packs it with protobuf-c and writes it
 * atomically (a temporary file, fsync, rename). */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "data/internal.h"
#include <onnx.pb-c.h>

/* everything the message points to, freed together */
typedef struct arena { void **p; size_t n, cap; int failed; } arena;

static void *take(arena *a, void *p)
{
    if (!p) { a->failed = 1; return NULL; }
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        void **q = realloc(a->p, cap * sizeof *q);
        if (!q) { free(p); a->failed = 1; return NULL; }
        a->p = q, a->cap = cap;
    }
    a->p[a->n++] = p;
    return p;
}
static void *alloc(arena *a, size_t n) { return take(a, calloc(1, n ? n : 1)); }
static char *str(arena *a, const cJSON *j) { return take(a, strdup(cJSON_IsString(j) ? j->valuestring : "")); }

static Onnx__ValueInfoProto *value_info(arena *a, const cJSON *j)
{
    Onnx__ValueInfoProto *v = alloc(a, sizeof *v);
    Onnx__TypeProto *t = alloc(a, sizeof *t);
    Onnx__TypeProto__Tensor *tt = alloc(a, sizeof *tt);
    Onnx__TensorShapeProto *shape = alloc(a, sizeof *shape);
    if (a->failed) return NULL;
    onnx__value_info_proto__init(v); onnx__type_proto__init(t); onnx__type_proto__tensor__init(tt); onnx__tensor_shape_proto__init(shape);
    v->name = str(a, cJSON_GetObjectItem(j, "name"));
    v->type = t;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    t->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = (int32_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "dtype"));
    tt->shape = shape;
    const cJSON *dims = cJSON_GetObjectItem(j, "shape");
    shape->n_dim = (size_t)cJSON_GetArraySize(dims);
    shape->dim = alloc(a, shape->n_dim * sizeof *shape->dim);
    for (size_t i = 0; !a->failed && i < shape->n_dim; i++) {
        const cJSON *d = cJSON_GetArrayItem(dims, (int)i);
        Onnx__TensorShapeProto__Dimension *dim = alloc(a, sizeof *dim);
        if (!dim) return NULL;
        onnx__tensor_shape_proto__dimension__init(dim);
        if (cJSON_IsString(d)) dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM, dim->dim_param = str(a, d);
        else dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE, dim->dim_value = (int64_t)cJSON_GetNumberValue(d);
        shape->dim[i] = dim;
    }
    return a->failed ? NULL : v;
}

static Onnx__AttributeProto *attribute(arena *a, const cJSON *j)
{
    Onnx__AttributeProto *at = alloc(a, sizeof *at);
    if (!at) return NULL;
    onnx__attribute_proto__init(at);
    at->name = str(a, cJSON_GetObjectItem(j, "name"));
    at->has_type = 1;
    const cJSON *v;
    if ((v = cJSON_GetObjectItem(j, "i"))) at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT, at->has_i = 1, at->i = (int64_t)v->valuedouble;
    else if ((v = cJSON_GetObjectItem(j, "f"))) at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, at->has_f = 1, at->f = (float)v->valuedouble;
    else if ((v = cJSON_GetObjectItem(j, "s"))) {
        at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING, at->has_s = 1;
        char *s = str(a, v);
        at->s.data = (uint8_t *)s, at->s.len = s ? strlen(s) : 0;
    } else if ((v = cJSON_GetObjectItem(j, "ints"))) {
        at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        at->n_ints = (size_t)cJSON_GetArraySize(v);
        at->ints = alloc(a, at->n_ints * sizeof *at->ints);
        for (size_t i = 0; at->ints && i < at->n_ints; i++) at->ints[i] = (int64_t)cJSON_GetArrayItem(v, (int)i)->valuedouble;
    } else if ((v = cJSON_GetObjectItem(j, "floats"))) {
        at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
        at->n_floats = (size_t)cJSON_GetArraySize(v);
        at->floats = alloc(a, at->n_floats * sizeof *at->floats);
        for (size_t i = 0; at->floats && i < at->n_floats; i++) at->floats[i] = (float)cJSON_GetArrayItem(v, (int)i)->valuedouble;
    } else if ((v = cJSON_GetObjectItem(j, "strings"))) {
        at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
        at->n_strings = (size_t)cJSON_GetArraySize(v);
        at->strings = alloc(a, at->n_strings * sizeof *at->strings);
        for (size_t i = 0; at->strings && i < at->n_strings; i++) {
            char *s = str(a, cJSON_GetArrayItem(v, (int)i));
            at->strings[i].data = (uint8_t *)s, at->strings[i].len = s ? strlen(s) : 0;
        }
    } else {
        nnr_errorf(NNR_ERR_INVALID, "onnx export: attribute '%s' has no value", at->name ? at->name : "");
        a->failed = 2;
    }
    return a->failed ? NULL : at;
}

static char **strings(arena *a, const cJSON *j, size_t *n)
{
    *n = (size_t)cJSON_GetArraySize(j);
    char **out = alloc(a, *n * sizeof *out);
    for (size_t i = 0; out && i < *n; i++) out[i] = str(a, cJSON_GetArrayItem(j, (int)i));
    return out;
}

static Onnx__NodeProto *node(arena *a, const cJSON *j)
{
    Onnx__NodeProto *nd = alloc(a, sizeof *nd);
    if (!nd) return NULL;
    onnx__node_proto__init(nd);
    nd->op_type = str(a, cJSON_GetObjectItem(j, "op"));
    nd->name = str(a, cJSON_GetObjectItem(j, "name"));
    nd->domain = str(a, NULL);
    nd->input = strings(a, cJSON_GetObjectItem(j, "inputs"), &nd->n_input);
    nd->output = strings(a, cJSON_GetObjectItem(j, "outputs"), &nd->n_output);
    const cJSON *attrs = cJSON_GetObjectItem(j, "attrs");
    nd->n_attribute = (size_t)cJSON_GetArraySize(attrs);
    nd->attribute = alloc(a, nd->n_attribute * sizeof *nd->attribute);
    for (size_t i = 0; nd->attribute && i < nd->n_attribute; i++)
        if (!(nd->attribute[i] = attribute(a, cJSON_GetArrayItem(attrs, (int)i)))) return NULL;
    return a->failed ? NULL : nd;
}

static Onnx__TensorProto *initializer(arena *a, const char *name, const nnr_tensor *t)
{
    Onnx__TensorProto *tp = alloc(a, sizeof *tp);
    if (!tp) return NULL;
    onnx__tensor_proto__init(tp);
    tp->name = take(a, strdup(name));
    tp->has_data_type = 1;
    tp->data_type = nnr_onnx_type_of(t->dtype);
    tp->n_dims = (size_t)t->ndim;
    tp->dims = alloc(a, tp->n_dims * sizeof *tp->dims);
    int64_t numel = 1;
    for (int i = 0; tp->dims && i < t->ndim; i++) tp->dims[i] = t->sizes[i], numel *= t->sizes[i];
    tp->has_raw_data = 1;
    tp->raw_data.len = (size_t)numel * (size_t)nnr_dtype_size(t->dtype);
    tp->raw_data.data = nnr_tensor_data((nnr_tensor *)t);
    return a->failed ? NULL : tp;
}

static int build(arena *a, const cJSON *j, int n, const char *const *names, nnr_tensor *const *tensors, Onnx__ModelProto *m)
{
    Onnx__GraphProto *g = alloc(a, sizeof *g);
    Onnx__OperatorSetIdProto *opset = alloc(a, sizeof *opset);
    Onnx__OperatorSetIdProto **opsets = alloc(a, sizeof *opsets);
    if (a->failed) return -1;
    onnx__graph_proto__init(g); onnx__operator_set_id_proto__init(opset);
    m->has_ir_version = 1, m->ir_version = 8;
    m->producer_name = take(a, strdup("nnrun"));
    m->producer_version = str(a, cJSON_GetObjectItem(j, "producer_version"));
    opset->domain = take(a, strdup("")), opset->has_version = 1;
    opset->version = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "opset"));
    opsets[0] = opset, m->opset_import = opsets, m->n_opset_import = 1;
    m->graph = g;
    g->name = str(a, cJSON_GetObjectItem(j, "name"));
    const cJSON *ins = cJSON_GetObjectItem(j, "inputs"), *outs = cJSON_GetObjectItem(j, "outputs"), *nodes = cJSON_GetObjectItem(j, "nodes");
    g->n_input = (size_t)cJSON_GetArraySize(ins), g->n_output = (size_t)cJSON_GetArraySize(outs), g->n_node = (size_t)cJSON_GetArraySize(nodes);
    g->n_initializer = (size_t)n;
    g->input = alloc(a, g->n_input * sizeof *g->input);
    g->output = alloc(a, g->n_output * sizeof *g->output);
    g->node = alloc(a, g->n_node * sizeof *g->node);
    g->initializer = alloc(a, (size_t)n * sizeof *g->initializer);
    if (a->failed) return -1;
    for (size_t i = 0; i < g->n_input; i++) if (!(g->input[i] = value_info(a, cJSON_GetArrayItem(ins, (int)i)))) return -1;
    for (size_t i = 0; i < g->n_output; i++) if (!(g->output[i] = value_info(a, cJSON_GetArrayItem(outs, (int)i)))) return -1;
    for (size_t i = 0; i < g->n_node; i++) if (!(g->node[i] = node(a, cJSON_GetArrayItem(nodes, (int)i)))) return -1;
    for (int i = 0; i < n; i++) {
        if (!tensors[i] || !nnr_tensor_is_contiguous(tensors[i]) || tensors[i]->device != nnr_host_device())
            return nnr_errorf(NNR_ERR_INVALID, "onnx export: initializer '%s' must be a contiguous host tensor", names[i]);
        if (!(g->initializer[i] = initializer(a, names[i], tensors[i]))) return -1;
    }
    return 0;
}

int nnr_onnx_save(const char *path, const char *json, int n, const char *const *names, nnr_tensor *const *tensors)
{
    cJSON *j = cJSON_Parse(json);
    if (!j) return nnr_errorf(NNR_ERR_INVALID, "onnx export: the graph description is not JSON");
    arena a = { 0 };
    Onnx__ModelProto m;
    onnx__model_proto__init(&m);
    int st = build(&a, j, n, names, tensors, &m);
    if (st && a.failed == 1) st = nnr_errorf(NNR_ERR_OOM, "onnx export %s: out of memory", path);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!st) {
        len = onnx__model_proto__get_packed_size(&m);
        if (len > INT32_MAX)        /* protobuf's limit: readers refuse more */
            st = nnr_errorf(NNR_ERR_INVALID, "onnx export %s: the model is %zu bytes, more than protobuf's 2 GiB", path, len);
    }
    if (!st) {
        buf = malloc(len ? len : 1);
        if (!buf) st = nnr_errorf(NNR_ERR_OOM, "onnx export %s: out of memory (%zu bytes)", path, len);
        else onnx__model_proto__pack(&m, buf);
    }
    if (!st) {
        const void *parts[1] = { buf };
        st = nnr_write_atomically(path, 1, parts, &len);
    }
    free(buf);
    for (size_t i = 0; i < a.n; i++) free(a.p[i]);
    free(a.p);
    cJSON_Delete(j);
    return st;
}
