// Package samonnx is the sam-onnx segmenter: SAM's automatic mask generator
// (SamAutomaticMaskGenerator with its defaults, METHOD §2) over the standard
// two-model ONNX export of SAM, MobileSAM or an equivalent, run with ONNX Runtime
// through github.com/yalue/onnxruntime_go (cgo; libonnxruntime >= 1.24 loaded at run
// time from masks.sam.library or $ONNXRUNTIME_LIB; `make onnxruntime` fetches one).
//
// Per image it does what segment-anything does, in the same order and float32
// arithmetic where it matters:
//
//   - preprocessing: the RGB8 image resized so its longest side is 1024 with
//     Pillow's antialiased bilinear resample (what ResizeLongestSide.apply_image
//     does through torchvision on a PIL image), normalised with SAM's pixel mean and
//     std, zero-padded to 1024x1024 → encoder → image_embeddings (1,256,64,64);
//   - prompts: a points_per_side² grid at ((i+0.5)/n·W, (j+0.5)/n·H), mapped to the
//     1024 frame (apply_coords), each a single foreground point plus SAM's (0,0)
//     padding point with label −1, decoded points_per_batch at a time when the
//     decoder's batch dimension is dynamic (SAM's export fixes it to 1: then one
//     prompt per run), decoder runs spread over the cores;
//   - per prompt, the three multimask outputs (masks 1..3 of 4): the predicted-IoU
//     filter (> pred_iou_thresh), the stability score on the full-resolution logits
//     (pixels > t+offset over pixels > t−offset, filter >= stability_score_thresh),
//     the mask (> mask_threshold) and its box;
//   - box NMS (torchvision batched_nms, one category) over all prompts' masks,
//     sorted by predicted IoU; no crop layers, no small-region removal;
//   - painting in descending predicted IoU into a maskgen.LabelMap, later masks
//     overwriting, label i for the i-th mask, 0 elsewhere.
//
// The full-resolution logits are SAM's postprocess_masks of low_res_masks (bilinear
// 256→1024, crop to the resized size, bilinear to the image size). They are never
// materialised: a pixel's value is computed only where the low-resolution logits it
// depends on straddle a threshold; elsewhere whole blocks are decided at once.
//
// ONNX Runtime's environment is process-wide (one library per process); see New.
package samonnx

//go:generate go run ./internal/standin/genstandin -o testdata
