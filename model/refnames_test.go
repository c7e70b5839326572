package model

import (
	"fmt"
	"testing"
)

// refStateDict is the reference's state dict (names and shapes, in registration
// order) built the way PyTorch builds it from the module structure of
// lose4578/SAM-DiffSR (models_sr/diffsr_modules.py, models_sr/commons.py) as
// reference-code-notes.md §1-§2 describe it — written independently of this
// package's constructors, so a naming slip on either side shows.
type refStateDict struct {
	names  []string
	shapes map[string][]int
}

func (r *refStateDict) add(name string, shape ...int) {
	if r.shapes == nil {
		r.shapes = map[string][]int{}
	}
	r.names = append(r.names, name)
	r.shapes[name] = shape
}

// nn.Conv2d(in, out, k): weight out×in×k×k, bias out.
func (r *refStateDict) conv(p string, in, out, k int) {
	r.add(p+".weight", out, in, k, k)
	r.add(p+".bias", out)
}

// nn.ConvTranspose2d(in, out, k): weight in×out×k×k, bias out.
func (r *refStateDict) convT(p string, in, out, k int) {
	r.add(p+".weight", in, out, k, k)
	r.add(p+".bias", out)
}

// nn.Linear(in, out): weight out×in, bias out.
func (r *refStateDict) linear(p string, in, out int) {
	r.add(p+".weight", out, in)
	r.add(p+".bias", out)
}

// Block (groups=0): Sequential(ReflectionPad2d(1), Conv2d(din, dout, 3), Mish()).
func (r *refStateDict) block(p string, din, dout int) { r.conv(p+".block.1", din, dout, 3) }

// ResnetBlock: mlp = Sequential(Mish(), Linear(tdim, dout)), block1, block2,
// res_conv = Conv2d(din, dout, 1) when din != dout (else Identity).
func (r *refStateDict) resnet(p string, din, dout, tdim int) {
	r.linear(p+".mlp.1", tdim, dout)
	r.block(p+".block1", din, dout)
	r.block(p+".block2", dout, dout)
	if din != dout {
		r.conv(p+".res_conv", din, dout, 1)
	}
}

// unet is Unet(hidden_size=dim, out_dim=3, cond_dim=nf, dim_mults) under "denoise_fn".
func (r *refStateDict) unet(dim int, mults []int, nf, nb, scale int) {
	const p = "denoise_fn."
	dims := []int{3}
	for _, m := range mults {
		dims = append(dims, dim*m)
	}
	L := len(mults)
	r.convT(p+"cond_proj", nf*((nb+1)/3), dim, 2*scale)
	r.linear(p+"mlp.0", dim, 4*dim)
	r.linear(p+"mlp.2", 4*dim, dim)
	for i := 0; i < L; i++ {
		din, dout := dims[i], dims[i+1]
		r.resnet(fmt.Sprintf("%sdowns.%d.0", p, i), din, dout, dim)
		r.resnet(fmt.Sprintf("%sdowns.%d.1", p, i), dout, dout, dim)
		if i < L-1 { // Downsample: self.conv = Sequential(ReflectionPad2d(1), Conv2d(d, d, 3, 2))
			r.conv(fmt.Sprintf("%sdowns.%d.2.conv.1", p, i), dout, dout, 3)
		}
	}
	r.resnet(p+"mid_block1", dims[L], dims[L], dim)
	r.resnet(p+"mid_block2", dims[L], dims[L], dim)
	for j := 0; j < L-1; j++ { // reversed(in_out[1:])
		din, dout := dims[L-1-j], dims[L-j]
		r.resnet(fmt.Sprintf("%sups.%d.0", p, j), 2*dout, din, dim)
		r.resnet(fmt.Sprintf("%sups.%d.1", p, j), din, din, dim)
		// Upsample: self.conv = Sequential(ConvTranspose2d(d, d, 4, 2, 1))
		r.convT(fmt.Sprintf("%sups.%d.2.conv.0", p, j), din, din, 4)
	}
	r.block(p+"final_conv.0", dim, dim)
	r.conv(p+"final_conv.1", dim, 3, 1)
}

// rrdb is RRDBNet(3, 3, nf, nb, gc) under "rrdb" (x4: upconv1, upconv2).
func (r *refStateDict) rrdb(nf, nb, gc int) {
	const p = "rrdb."
	r.conv(p+"conv_first", 3, nf, 3)
	for b := 0; b < nb; b++ {
		for k := 1; k <= 3; k++ {
			for c := 0; c < 5; c++ { // ResidualDenseBlock_5C: conv1..conv5
				out := gc
				if c == 4 {
					out = nf
				}
				r.conv(fmt.Sprintf("%sRRDB_trunk.%d.RDB%d.conv%d", p, b, k, c+1), nf+c*gc, out, 3)
			}
		}
	}
	r.conv(p+"trunk_conv", nf, nf, 3)
	r.conv(p+"upconv1", nf, nf, 3)
	r.conv(p+"upconv2", nf, nf, 3)
	r.conv(p+"HRconv", nf, nf, 3)
	r.conv(p+"conv_last", nf, 3, 3)
}

func (r *refStateDict) count() int {
	n := 0
	for _, s := range r.shapes {
		k := 1
		for _, d := range s {
			k *= d
		}
		n += k
	}
	return n
}

// TestReferenceStateDict holds the model's parameters to the reference's complete
// state dict (every name, every shape, the order within each network) for the paper
// and quickstart configurations, so a checkpoint loads into the reference modules
// with load_state_dict(strict=True) and a reference checkpoint loads here.
func TestReferenceStateDict(t *testing.T) {
	for _, file := range []string{"sam_diffsr_x4.yaml", "quickstart.yaml"} {
		t.Run(file, func(t *testing.T) {
			cfg := loadConfig(t, file)
			m, err := New(cfg, 1)
			if err != nil {
				t.Fatal(err)
			}
			rc, uc := cfg.Model.RRDB, cfg.Model.UNet
			var ru, rr refStateDict
			ru.unet(uc.Dim, uc.DimMults, rc.NF, rc.NB, 4)
			rr.rrdb(rc.NF, rc.NB, rc.GC)
			if file == "sam_diffsr_x4.yaml" {
				// The notes' counts (§1, §2) check the derivation itself.
				if ru.count() != 12934915 || rr.count() != 12381443 {
					t.Fatalf("derived reference has %d U-Net and %d RRDB parameters, notes say 12934915 and 12381443", ru.count(), rr.count())
				}
			}
			compareStateDict(t, "U-Net", m.UNetParams(), ru)
			compareStateDict(t, "RRDB", m.RRDBParams(), rr)
		})
	}
}

func compareStateDict(t *testing.T, what string, ps []*Param, ref refStateDict) {
	t.Helper()
	got := map[string][]int{}
	for _, p := range ps {
		got[p.Name] = p.Shape
		want, ok := ref.shapes[p.Name]
		if !ok {
			t.Errorf("%s: parameter %q is not in the reference's state dict", what, p.Name)
			continue
		}
		if !sameShape(p.Shape, want) {
			t.Errorf("%s: %s has shape %v, the reference %v", what, p.Name, p.Shape, want)
		}
	}
	for _, n := range ref.names {
		if _, ok := got[n]; !ok {
			t.Errorf("%s: reference parameter %q is missing", what, n)
		}
	}
	if t.Failed() {
		return
	}
	for i, p := range ps {
		if ref.names[i] != p.Name {
			t.Errorf("%s: parameter %d is %q, the reference's state dict has %q there", what, i, p.Name, ref.names[i])
			return
		}
	}
}
