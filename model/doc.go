// Package model holds the SAM-DiffSR networks and diffusion (spec/METHOD.md §3-§4):
// the RRDB LR encoder, the conditional U-Net denoiser, the cosine schedule with the
// three modulations of the forward process, the L1 training loss, the DDPM and DDIM samplers
// and Adam — with hand-written forward and backward passes on flat float32 NCHW
// tensors, running on a Backend (the CPU one today; CUDA later).
//
// # Using it
//
//	m, err := model.New(cfg, cfg.Seed)          // sizes from cfg.Model, schedule from cfg.Diffusion
//	opt := model.NewAdam()
//	loss, err := m.DiffusionLoss(&model.Batch{N: n, H: h, W: w, HR: hr, Up: up, LR: lr, E: e}, t, noise)
//	// ... all-reduce m.UNetGrads() (one contiguous slice: sum, then divide by the world size) ...
//	err = opt.Step(m.UNetParams(), lr)
//	sr, err := m.Sample(ctx, lrImg, upImg, n, h, w, rng, nil) // SR in [-1,1]
//
// RRDB pretraining is the same with RRDBLoss and RRDBParams. Conventions:
//   - Tensors are flat []float32, NCHW, values in [-1,1]. A Batch holds HR and Up
//     (N×3×H×W; Up is 2·bicubic(lr/256)-1 as the reference builds it), LR
//     (N×3×H/4×W/4) and E (N×1×H×W). H and W must be multiples of Multiple() (8 for
//     four U-Net levels).
//   - t holds one step per sample in 0..T-1 (drawn uniformly by the caller) and noise
//     is N×3×H×W standard normal: the caller owns all randomness, so a rank derives
//     its batch, t and noise from (seed, step, rank, world) and the step is
//     deterministic. Same inputs give bit-identical loss and gradients: every
//     reduction has a fixed order, whatever the number of cores.
//   - The loss calls overwrite (not accumulate) the gradients of the trained network;
//     the loss is the mean over the local batch's elements, so ranks average grads.
//     Each network's Params share two contiguous slabs (UNetValues/UNetGrads,
//     RRDBValues/RRDBGrads), so the gradient is all-reduced in one call.
//   - Params returns live parameters with the reference's PyTorch state-dict names
//     ("rrdb.RRDB_trunk.3.RDB2.conv4.weight", "denoise_fn.downs.0.0.block1.block.1.weight",
//     "denoise_fn.cond_proj.bias", …) and PyTorch shapes, for safetensors checkpoints;
//     LoadWeights reads them back; Adam.State/Adam.Load export "<name>.exp_avg" and
//     "<name>.exp_avg_sq" plus the step count.
//   - An SRDiff reuses its buffers from call to call (no per-step allocation of big
//     tensors) and is not safe for concurrent use; each call uses every core.
//
// # Networks
//
// RRDB (nf, nb, gc): conv_first, nb RRDBs (3 dense blocks each), trunk_conv, and the
// x4 head used only for pretraining. Conditioning: maps 2, 5, 8, … of the nb+1
// feature maps (nf·(nb+1)/3 channels; 384 for the paper), computed once per image.
// U-Net (dim, mults): Mish, reflection padding, no normalisation, time MLP, stride-2
// reflect conv down, ConvTranspose2d(4,2,1) up, cond = ConvTranspose2d(condC, dim, 8,
// 4, 2) added after down level 0, unused level-0 skip, Block + 1x1 head. For the
// paper's config the U-Net has 12,934,915 parameters and the RRDB 12,381,443.
//
// # Compute
//
// Every convolution is im2col (zero or reflection padding fused in) plus one sgemm
// per image; the backward pass recomputes im2col rather than storing it. sgemm goes
// through gonum's blas32, which the openblas build tag points at OpenBLAS (cgo,
// -lopenblas) at package init, the only package-level state; BLASName says which is
// in use. Im2col, col2im and the elementwise kernels split work over GOMAXPROCS
// goroutines between gemm calls, so they never compete with OpenBLAS's threads.
package model
