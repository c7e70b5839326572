// Package onnxbuild writes small ONNX models (ModelProto) by hand, field by field,
// with protowire. It knows just enough of onnx.proto to describe a graph of standard
// operators with float/int64 initialisers and typed inputs and outputs; it exists so
// the samonnx tests can generate their stand-in models without Python or the onnx
// package.
package onnxbuild

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Element types (onnx.TensorProto.DataType).
const (
	Float int32 = 1
	Int64 int32 = 7
)

// Field numbers from onnx.proto.
const (
	modelIRVersion   = 1
	modelProducer    = 2
	modelGraph       = 7
	modelOpsetImport = 8

	opsetDomain  = 1
	opsetVersion = 2

	graphNode        = 1
	graphName        = 2
	graphInitializer = 5
	graphInput       = 11
	graphOutput      = 12

	nodeInput     = 1
	nodeOutput    = 2
	nodeName      = 3
	nodeOpType    = 4
	nodeAttribute = 5

	attrName   = 1
	attrF      = 2
	attrI      = 3
	attrS      = 4
	attrFloats = 7
	attrInts   = 8
	attrType   = 20

	attrTypeFloat  = 1
	attrTypeInt    = 2
	attrTypeString = 3
	attrTypeFloats = 6
	attrTypeInts   = 7

	tensorDims     = 1
	tensorDataType = 2
	tensorName     = 8
	tensorRawData  = 9

	valueInfoName = 1
	valueInfoType = 2

	typeTensor      = 1
	typeTensorElem  = 1
	typeTensorShape = 2
	shapeDim        = 1
	dimValue        = 1
	dimParam        = 2
)

// Attr is one node attribute, already encoded.
type Attr struct{ b []byte }

func attrHeader(name string, typ uint64) []byte {
	var b []byte
	b = protowire.AppendTag(b, attrName, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, attrType, protowire.VarintType)
	b = protowire.AppendVarint(b, typ)
	return b
}

// Int is an INT attribute.
func Int(name string, v int64) Attr {
	b := attrHeader(name, attrTypeInt)
	b = protowire.AppendTag(b, attrI, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(v))
	return Attr{b}
}

// Float32 is a FLOAT attribute.
func Float32(name string, v float32) Attr {
	b := attrHeader(name, attrTypeFloat)
	b = protowire.AppendTag(b, attrF, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, math.Float32bits(v))
	return Attr{b}
}

// String is a STRING attribute.
func String(name, v string) Attr {
	b := attrHeader(name, attrTypeString)
	b = protowire.AppendTag(b, attrS, protowire.BytesType)
	b = protowire.AppendString(b, v)
	return Attr{b}
}

// Ints is an INTS attribute.
func Ints(name string, vs ...int64) Attr {
	b := attrHeader(name, attrTypeInts)
	for _, v := range vs {
		b = protowire.AppendTag(b, attrInts, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v))
	}
	return Attr{b}
}

// Floats is a FLOATS attribute.
func Floats(name string, vs ...float32) Attr {
	b := attrHeader(name, attrTypeFloats)
	for _, v := range vs {
		b = protowire.AppendTag(b, attrFloats, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(v))
	}
	return Attr{b}
}

// Dim is one dimension of a declared input or output: a fixed size, or a named
// symbolic size when Param is set.
type Dim struct {
	Value int64
	Param string
}

// D is a fixed dimension; P a symbolic one.
func D(v int64) Dim { return Dim{Value: v} }

// P is a symbolic (dynamic) dimension.
func P(name string) Dim { return Dim{Param: name} }

// Graph accumulates the nodes, initialisers, inputs and outputs of one graph.
// The zero value is not usable; call NewGraph.
type Graph struct {
	name                    string
	nodes, inits, ins, outs [][]byte
	n                       int
}

// NewGraph starts a graph.
func NewGraph(name string) *Graph { return &Graph{name: name} }

func valueInfo(name string, elem int32, dims []Dim) []byte {
	var shape []byte
	for _, d := range dims {
		var db []byte
		if d.Param != "" {
			db = protowire.AppendTag(db, dimParam, protowire.BytesType)
			db = protowire.AppendString(db, d.Param)
		} else {
			db = protowire.AppendTag(db, dimValue, protowire.VarintType)
			db = protowire.AppendVarint(db, uint64(d.Value))
		}
		shape = protowire.AppendTag(shape, shapeDim, protowire.BytesType)
		shape = protowire.AppendBytes(shape, db)
	}
	var tt []byte
	tt = protowire.AppendTag(tt, typeTensorElem, protowire.VarintType)
	tt = protowire.AppendVarint(tt, uint64(elem))
	tt = protowire.AppendTag(tt, typeTensorShape, protowire.BytesType)
	tt = protowire.AppendBytes(tt, shape)
	var typ []byte
	typ = protowire.AppendTag(typ, typeTensor, protowire.BytesType)
	typ = protowire.AppendBytes(typ, tt)
	var b []byte
	b = protowire.AppendTag(b, valueInfoName, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, valueInfoType, protowire.BytesType)
	b = protowire.AppendBytes(b, typ)
	return b
}

// Input declares a graph input.
func (g *Graph) Input(name string, elem int32, dims ...Dim) string {
	g.ins = append(g.ins, valueInfo(name, elem, dims))
	return name
}

// Output declares a graph output (an existing value name).
func (g *Graph) Output(name string, elem int32, dims ...Dim) {
	g.outs = append(g.outs, valueInfo(name, elem, dims))
}

func tensor(name string, elem int32, dims []int64, raw []byte) []byte {
	var b []byte
	for _, d := range dims {
		b = protowire.AppendTag(b, tensorDims, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(d))
	}
	b = protowire.AppendTag(b, tensorDataType, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(elem))
	b = protowire.AppendTag(b, tensorName, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, tensorRawData, protowire.BytesType)
	b = protowire.AppendBytes(b, raw)
	return b
}

func count(dims []int64) int {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	return n
}

// ConstF adds a float initialiser with the given shape and returns its name.
func (g *Graph) ConstF(dims []int64, vals ...float32) string {
	if count(dims) != len(vals) {
		panic(fmt.Sprintf("onnxbuild: float constant of shape %v given %d values", dims, len(vals)))
	}
	raw := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	name := g.fresh("c")
	g.inits = append(g.inits, tensor(name, Float, dims, raw))
	return name
}

// ConstI adds an int64 initialiser with the given shape and returns its name.
func (g *Graph) ConstI(dims []int64, vals ...int64) string {
	if count(dims) != len(vals) {
		panic(fmt.Sprintf("onnxbuild: int64 constant of shape %v given %d values", dims, len(vals)))
	}
	raw := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	name := g.fresh("c")
	g.inits = append(g.inits, tensor(name, Int64, dims, raw))
	return name
}

// Vec is a 1-D int64 constant.
func (g *Graph) Vec(vals ...int64) string { return g.ConstI([]int64{int64(len(vals))}, vals...) }

func (g *Graph) fresh(prefix string) string {
	g.n++
	return fmt.Sprintf("%s%d", prefix, g.n)
}

// Op adds a node with one fresh output and returns the output's name. An empty input
// name stands for an omitted optional input.
func (g *Graph) Op(op string, attrs []Attr, inputs ...string) string {
	out := g.fresh("v")
	g.Node(op, attrs, inputs, []string{out})
	return out
}

// Node adds a node with explicit output names.
func (g *Graph) Node(op string, attrs []Attr, inputs, outputs []string) {
	var b []byte
	for _, in := range inputs {
		b = protowire.AppendTag(b, nodeInput, protowire.BytesType)
		b = protowire.AppendString(b, in)
	}
	for _, out := range outputs {
		b = protowire.AppendTag(b, nodeOutput, protowire.BytesType)
		b = protowire.AppendString(b, out)
	}
	b = protowire.AppendTag(b, nodeName, protowire.BytesType)
	b = protowire.AppendString(b, g.fresh("n"))
	b = protowire.AppendTag(b, nodeOpType, protowire.BytesType)
	b = protowire.AppendString(b, op)
	for _, a := range attrs {
		b = protowire.AppendTag(b, nodeAttribute, protowire.BytesType)
		b = protowire.AppendBytes(b, a.b)
	}
	g.nodes = append(g.nodes, b)
}

// Identity copies value in to a value named out (to give outputs their names).
func (g *Graph) Identity(in, out string) { g.Node("Identity", nil, []string{in}, []string{out}) }

// Model encodes the graph as a ModelProto with the default-domain opset given
// (IR version 8).
func (g *Graph) Model(producer string, opset int64) []byte {
	var gb []byte
	for _, n := range g.nodes {
		gb = protowire.AppendTag(gb, graphNode, protowire.BytesType)
		gb = protowire.AppendBytes(gb, n)
	}
	gb = protowire.AppendTag(gb, graphName, protowire.BytesType)
	gb = protowire.AppendString(gb, g.name)
	for _, t := range g.inits {
		gb = protowire.AppendTag(gb, graphInitializer, protowire.BytesType)
		gb = protowire.AppendBytes(gb, t)
	}
	for _, v := range g.ins {
		gb = protowire.AppendTag(gb, graphInput, protowire.BytesType)
		gb = protowire.AppendBytes(gb, v)
	}
	for _, v := range g.outs {
		gb = protowire.AppendTag(gb, graphOutput, protowire.BytesType)
		gb = protowire.AppendBytes(gb, v)
	}
	var os []byte
	os = protowire.AppendTag(os, opsetDomain, protowire.BytesType)
	os = protowire.AppendString(os, "")
	os = protowire.AppendTag(os, opsetVersion, protowire.VarintType)
	os = protowire.AppendVarint(os, uint64(opset))
	var b []byte
	b = protowire.AppendTag(b, modelIRVersion, protowire.VarintType)
	b = protowire.AppendVarint(b, 8)
	b = protowire.AppendTag(b, modelProducer, protowire.BytesType)
	b = protowire.AppendString(b, producer)
	b = protowire.AppendTag(b, modelGraph, protowire.BytesType)
	b = protowire.AppendBytes(b, gb)
	b = protowire.AppendTag(b, modelOpsetImport, protowire.BytesType)
	b = protowire.AppendBytes(b, os)
	return b
}
