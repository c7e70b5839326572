package torchfile

import (
	"fmt"
	"math/big"

	"github.com/nlpodyssey/gopickle/types"
)

// RefusedError is returned for a pickle that references a Python callable outside
// the set a tensor checkpoint needs (torch's tensor and parameter rebuild functions,
// its storage classes, collections.OrderedDict). Such a pickle would run that callable
// under Python's torch.load; here nothing is ever called, and the file is refused.
type RefusedError struct {
	// Global is "module.name" of the callable.
	Global string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the pickle references %s, which is not part of a tensor checkpoint (only torch's tensor-rebuild functions, storage classes and OrderedDict are); refusing to load it — under Python it could run arbitrary code", e.Global)
}

// storageClass is a torch.*Storage class named by a storage's persistent id.
type storageClass struct{ dtype DType }

// dtypes of the storage classes a checkpoint may name.
var storageClasses = map[string]DType{
	"FloatStorage": Float32, "DoubleStorage": Float64, "HalfStorage": Float16, "BFloat16Storage": BFloat16,
	"LongStorage": Int64, "IntStorage": Int32, "ShortStorage": Int16, "CharStorage": Int8,
	"ByteStorage": Uint8, "BoolStorage": Bool,
}

// findClass resolves the globals a pickle may reference; everything else is refused.
// (gopickle itself resolves collections.OrderedDict, __builtin__.object and
// copy_reg._reconstructor, plain data constructors, before asking.)
func findClass(module, name string) (any, error) {
	switch module + "." + name {
	case "torch._utils._rebuild_tensor_v2":
		return rebuildTensor{v2: true}, nil
	case "torch._utils._rebuild_tensor":
		return rebuildTensor{}, nil
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		return rebuildParameter{}, nil
	}
	if module == "torch" {
		if dt, ok := storageClasses[name]; ok {
			return &storageClass{dtype: dt}, nil
		}
	}
	return nil, &RefusedError{Global: module + "." + name}
}

// rebuildTensor is torch._utils._rebuild_tensor[_v2](storage, storage_offset, size,
// stride[, requires_grad, backward_hooks[, metadata]]): a view of a storage.
type rebuildTensor struct{ v2 bool }

func (r rebuildTensor) Call(args ...any) (any, error) {
	if len(args) < 4 || (r.v2 && len(args) > 7) || (!r.v2 && len(args) != 4) {
		return nil, fmt.Errorf("_rebuild_tensor: %d arguments", len(args))
	}
	st, ok := args[0].(*storage)
	if !ok {
		return nil, fmt.Errorf("_rebuild_tensor: first argument is %T, want a storage", args[0])
	}
	off, err := asInt(args[1])
	if err != nil {
		return nil, fmt.Errorf("_rebuild_tensor storage offset: %w", err)
	}
	size, err := intTuple(args[2])
	if err != nil {
		return nil, fmt.Errorf("_rebuild_tensor size: %w", err)
	}
	stride, err := intTuple(args[3])
	if err != nil {
		return nil, fmt.Errorf("_rebuild_tensor stride: %w", err)
	}
	if len(size) != len(stride) {
		return nil, fmt.Errorf("_rebuild_tensor: size %v and stride %v differ in rank", size, stride)
	}
	return &Tensor{storage: st, offset: off, Shape: size, stride: stride}, nil
}

// rebuildParameter is torch._utils._rebuild_parameter(data, requires_grad,
// backward_hooks[, state]): the parameter's tensor.
type rebuildParameter struct{}

func (rebuildParameter) Call(args ...any) (any, error) {
	if len(args) < 1 {
		return nil, fmt.Errorf("_rebuild_parameter: no arguments")
	}
	t, ok := args[0].(*Tensor)
	if !ok {
		return nil, fmt.Errorf("_rebuild_parameter: data is %T, want a tensor", args[0])
	}
	return t, nil
}

func asInt(v any) (int, error) {
	switch x := v.(type) {
	case int:
		return x, nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case *big.Int:
		if x.IsInt64() && x.Int64() >= -1<<62 && x.Int64() < 1<<62 {
			return int(x.Int64()), nil
		}
		return 0, fmt.Errorf("integer %s out of range", x)
	}
	return 0, fmt.Errorf("%T is not an integer", v)
}

func intTuple(v any) ([]int, error) {
	var items []any
	switch x := v.(type) {
	case *types.Tuple:
		items = *x
	case *types.List:
		items = *x
	default:
		return nil, fmt.Errorf("%T is not a tuple", v)
	}
	out := make([]int, len(items))
	for i, it := range items {
		n, err := asInt(it)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}
