// Package standin builds tiny stand-in models for the SAM two-model ONNX export: an
// image encoder and a prompt/mask decoder with the same input and output names and
// shapes as SAM's, whose outputs are known, simple functions of their inputs. The
// samonnx tests run the whole automatic mask generator on them and check the label
// maps against expectations computed independently from those functions.
//
// Encoder: images (1,3,1024,1024) → image_embeddings (1,256,64,64), where channel c<3
// is the 16x16 average pool of input channel c and channels 3..255 are 0.
//
// Decoder: for each prompt b (the first point (px,py) of point_coords[b], label l),
// mask k (0..3) and low-resolution cell (i,j) of the 256x256 grid, whose centre in the
// 1024 frame is (u,v) = (4j+2, 4i+2):
//
//	low_res_masks[b,k,i,j] = Slope[k]·(Radius[k] − max(|u−px|, |v−py|)) + Beta[k]·E0[i/4, j/4]
//	                         + has_mask_input·mask_input[i,j]
//	iou_predictions[b,k]   = IoUBase[k] + IoUPerX·px + IoUPerY·py + IoUPerLabel·(l − 1)
//
// where E0 is channel 0 of the image embedding (nearest-upsampled 64→256). In the
// batch-1 decoder, masks is low_res_masks resized as SAM's export does (bilinear to
// 1024x1024, cropped to the resized image size, bilinear to orig_im_size); the
// batched decoder resizes straight to orig_im_size, which is cheaper (samonnx does
// not read masks; the tests compare the faithful one with its own upscaling).
package standin

import (
	"github.com/samdiffsr/samdiffsr/maskgen/samonnx/internal/onnxbuild"
)

// Params are the constants of the stand-in decoder's function (see the package doc).
type Params struct {
	Radius, Slope, Beta, IoUBase  [4]float32
	IoUPerX, IoUPerY, IoUPerLabel float32
}

// DecoderParams returns the constants baked into Decoder's models. Mask 0 (which
// SAM's multimask output drops) is a huge, confident box so that using it by mistake
// changes every result; masks 1..3 exercise the IoU filter (mask 1 passes 0.88 only
// right of the image centre), the stability filter (mask 2 is near 0.95 and depends
// on the image through E0) and box NMS (mask 3's boxes overlap their neighbours').
func DecoderParams() Params {
	return Params{
		Radius:      [4]float32{300, 30.3, 70.7, 150.5},
		Slope:       [4]float32{1, 8, 1.2, 4},
		Beta:        [4]float32{0, 0.5, 4, 1},
		IoUBase:     [4]float32{0.99, 0.875, 0.93, 0.95},
		IoUPerX:     0.01 / 1024,
		IoUPerY:     0.0001 / 1024,
		IoUPerLabel: 0.01,
	}
}

// Encoder returns the stand-in image encoder as ONNX bytes. Its input is named
// "images" (the samonnx loader accepts any name for the single encoder input).
func Encoder() []byte {
	g := onnxbuild.NewGraph("samonnx_standin_encoder")
	x := g.Input("images", onnxbuild.Float, onnxbuild.D(1), onnxbuild.D(3), onnxbuild.D(1024), onnxbuild.D(1024))
	pooled := g.Op("AveragePool", []onnxbuild.Attr{onnxbuild.Ints("kernel_shape", 16, 16), onnxbuild.Ints("strides", 16, 16)}, x)
	emb := g.Op("Pad", []onnxbuild.Attr{onnxbuild.String("mode", "constant")}, pooled, g.Vec(0, 0, 0, 0, 0, 253, 0, 0))
	g.Identity(emb, "image_embeddings")
	g.Output("image_embeddings", onnxbuild.Float, onnxbuild.D(1), onnxbuild.D(256), onnxbuild.D(64), onnxbuild.D(64))
	return g.Model("samdiffsr standin", 17)
}

// Decoder returns the stand-in mask decoder as ONNX bytes. With batched false its
// point inputs have batch size 1, as SAM's scripts/export_onnx_model.py exports
// them, and masks is computed as SAM computes it; with batched true the batch
// dimension is dynamic and masks is a cheap single resize.
func Decoder(batched bool) []byte {
	p := DecoderParams()
	g := onnxbuild.NewGraph("samonnx_standin_decoder")
	batch := onnxbuild.D(1)
	if batched {
		batch = onnxbuild.P("batch")
	}
	f := onnxbuild.Float
	emb := g.Input("image_embeddings", f, onnxbuild.D(1), onnxbuild.D(256), onnxbuild.D(64), onnxbuild.D(64))
	pc := g.Input("point_coords", f, batch, onnxbuild.P("num_points"), onnxbuild.D(2))
	pl := g.Input("point_labels", f, batch, onnxbuild.P("num_points"))
	mi := g.Input("mask_input", f, onnxbuild.D(1), onnxbuild.D(1), onnxbuild.D(256), onnxbuild.D(256))
	hm := g.Input("has_mask_input", f, onnxbuild.D(1))
	osz := g.Input("orig_im_size", f, onnxbuild.D(2))

	// First point of each prompt.
	p0 := g.Op("Slice", nil, pc, g.Vec(0), g.Vec(1), g.Vec(1))
	px := g.Op("Reshape", nil, g.Op("Slice", nil, p0, g.Vec(0), g.Vec(1), g.Vec(2)), g.Vec(-1, 1, 1, 1))
	py := g.Op("Reshape", nil, g.Op("Slice", nil, p0, g.Vec(1), g.Vec(2), g.Vec(2)), g.Vec(-1, 1, 1, 1))
	centres := make([]float32, 256)
	for i := range centres {
		centres[i] = float32(4*i + 2)
	}
	u := g.ConstF([]int64{1, 1, 1, 256}, centres...)
	v := g.ConstF([]int64{1, 1, 256, 1}, centres...)
	dx := g.Op("Abs", nil, g.Op("Sub", nil, u, px))
	dy := g.Op("Abs", nil, g.Op("Sub", nil, v, py))
	d := g.Op("Max", nil, dx, dy)
	k4 := []int64{1, 4, 1, 1}
	base := g.Op("Mul", nil, g.ConstF(k4, p.Slope[:]...), g.Op("Sub", nil, g.ConstF(k4, p.Radius[:]...), d))
	e0 := g.Op("Slice", nil, emb, g.Vec(0), g.Vec(1), g.Vec(1))
	e0up := g.Op("Resize", []onnxbuild.Attr{
		onnxbuild.String("mode", "nearest"),
		onnxbuild.String("coordinate_transformation_mode", "asymmetric"),
		onnxbuild.String("nearest_mode", "floor"),
	}, e0, "", g.ConstF([]int64{4}, 1, 1, 4, 4))
	logits := g.Op("Add", nil, base, g.Op("Mul", nil, g.ConstF(k4, p.Beta[:]...), e0up))
	prior := g.Op("Mul", nil, g.Op("Reshape", nil, hm, g.Vec(1, 1, 1, 1)), mi)
	g.Node("Add", nil, []string{logits, prior}, []string{"low_res_masks"})

	// IoU predictions.
	l0 := g.Op("Slice", nil, pl, g.Vec(0), g.Vec(1), g.Vec(1))
	px2 := g.Op("Reshape", nil, px, g.Vec(-1, 1))
	py2 := g.Op("Reshape", nil, py, g.Vec(-1, 1))
	one := g.ConstF([]int64{1, 1}, 1)
	iou := g.Op("Add", nil, g.ConstF([]int64{1, 4}, p.IoUBase[:]...), g.Op("Mul", nil, px2, g.ConstF([]int64{1, 1}, p.IoUPerX)))
	iou = g.Op("Add", nil, iou, g.Op("Mul", nil, py2, g.ConstF([]int64{1, 1}, p.IoUPerY)))
	g.Node("Add", nil, []string{iou, g.Op("Mul", nil, g.Op("Sub", nil, l0, one), g.ConstF([]int64{1, 1}, p.IoUPerLabel))}, []string{"iou_predictions"})

	linear := []onnxbuild.Attr{
		onnxbuild.String("mode", "linear"),
		onnxbuild.String("coordinate_transformation_mode", "pytorch_half_pixel"),
	}
	hw := g.Op("Cast", []onnxbuild.Attr{onnxbuild.Int("to", int64(onnxbuild.Int64))}, osz)
	if batched {
		// Cheap full-resolution masks (one bilinear resize): samonnx never reads them.
		bc := g.Op("Slice", nil, g.Op("Shape", nil, "low_res_masks"), g.Vec(0), g.Vec(2), g.Vec(0))
		sizes := g.Op("Concat", []onnxbuild.Attr{onnxbuild.Int("axis", 0)}, bc, hw)
		g.Node("Resize", linear, []string{"low_res_masks", "", "", sizes}, []string{"masks"})
	} else {
		// Full-resolution masks as SamOnnxModel.mask_postprocessing computes them.
		up := g.Op("Resize", linear, "low_res_masks", "", g.ConstF([]int64{4}, 1, 1, 4, 4))
		longest := g.Op("ReduceMax", []onnxbuild.Attr{onnxbuild.Int("keepdims", 0)}, osz)
		scale := g.Op("Div", nil, g.ConstF(nil, 1024), longest)
		pre := g.Op("Floor", nil, g.Op("Add", nil, g.Op("Mul", nil, osz, scale), g.ConstF(nil, 0.5)))
		preI := g.Op("Cast", []onnxbuild.Attr{onnxbuild.Int("to", int64(onnxbuild.Int64))}, pre)
		crop := g.Op("Slice", nil, up, g.Vec(0, 0), preI, g.Vec(2, 3))
		bc := g.Op("Slice", nil, g.Op("Shape", nil, crop), g.Vec(0), g.Vec(2), g.Vec(0))
		sizes := g.Op("Concat", []onnxbuild.Attr{onnxbuild.Int("axis", 0)}, bc, hw)
		g.Node("Resize", linear, []string{crop, "", "", sizes}, []string{"masks"})
	}

	g.Output("masks", f, batch, onnxbuild.D(4), onnxbuild.P("height"), onnxbuild.P("width"))
	g.Output("iou_predictions", f, batch, onnxbuild.D(4))
	g.Output("low_res_masks", f, batch, onnxbuild.D(4), onnxbuild.D(256), onnxbuild.D(256))
	return g.Model("samdiffsr standin", 17)
}

// LowRes writes mask k's 256x256 low-resolution logits for a prompt at (px, py) in
// the 1024 frame into out, from the known function, using e0(r, c) for channel 0 of
// the embedding at 64-grid cell (r, c). It evaluates in float32 in the model's order.
func (p Params) LowRes(k int, px, py float32, e0 func(r, c int) float32, out []float32) {
	for i := 0; i < 256; i++ {
		v := float32(4*i + 2)
		dy := abs32(v - py)
		for j := 0; j < 256; j++ {
			u := float32(4*j + 2)
			d := max(abs32(u-px), dy)
			base := float32(p.Slope[k] * float32(p.Radius[k]-d))
			out[i*256+j] = base + float32(p.Beta[k]*e0(i/4, j/4))
		}
	}
}

// IoU returns mask k's predicted IoU for a prompt at (px, py) with label l.
func (p Params) IoU(k int, px, py, l float32) float32 {
	iou := p.IoUBase[k] + float32(px*p.IoUPerX)
	iou += float32(py * p.IoUPerY)
	return iou + float32((l-1)*p.IoUPerLabel)
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}
