//go:build cuda

package kernels

import _ "embed"

// PTX is kernels.ptx, the device code the CUDA backend loads with cuModuleLoadData.
//
//go:embed kernels.ptx
var PTX string
