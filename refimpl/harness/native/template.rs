// A minimal correct attention kernel of refimpl's C ABI (refimpl_attention.h), in Rust: a starting point.
// Build:  rustc -O --crate-type cdylib -o libattn.so attn.rs
// Check:  refimpl check --target c:./libattn.so:attn
use std::os::raw::{c_int, c_uchar, c_void};

trait Real: Copy {
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
}
impl Real for f64 {
    fn to_f64(self) -> f64 { self }
    fn from_f64(x: f64) -> Self { x }
}
impl Real for f32 {
    fn to_f64(self) -> f64 { self as f64 }
    fn from_f64(x: f64) -> Self { x as f32 }
}

unsafe fn kernel<T: Real>(q: *const T, k: *const T, v: *const T, keep: *const c_uchar, shape: &[i64; 7],
                          scale: f64, out: *mut T, weights: *mut T) -> c_int {
    let [b_n, hq, hkv, sq, sk, d, dv] = *shape;
    if hkv <= 0 || hq % hkv != 0 { return 3; }
    let mut p = vec![0.0f64; sk.max(1) as usize];
    for b in 0..b_n {
        for h in 0..hq {
            let g = h / (hq / hkv);                                   // the kv head of query head h
            let (kh, vh) = (k.offset(((b * hkv + g) * sk * d) as isize), v.offset(((b * hkv + g) * sk * dv) as isize));
            for i in 0..sq {
                let row = (b * hq + h) * sq + i;
                let qi = q.offset((row * d) as isize);
                let mut m = f64::NEG_INFINITY;
                for j in 0..sk {
                    let mut s = 0.0;
                    for e in 0..d { s += (*qi.offset(e as isize)).to_f64() * (*kh.offset((j * d + e) as isize)).to_f64(); }
                    let masked = !keep.is_null() && *keep.offset((row * sk + j) as isize) == 0;
                    p[j as usize] = if masked { f64::NEG_INFINITY } else { s * scale };
                    m = m.max(p[j as usize]);
                }
                let mut z = 0.0;
                for j in 0..sk as usize { p[j] = if m.is_infinite() { 0.0 } else { (p[j] - m).exp() }; z += p[j]; }
                for e in 0..dv {
                    let mut acc = 0.0;
                    for j in 0..sk { acc += p[j as usize] * (*vh.offset((j * dv + e) as isize)).to_f64(); }
                    *out.offset((row * dv + e) as isize) = T::from_f64(if z > 0.0 { acc / z } else { 0.0 });
                }
                if !weights.is_null() {
                    for j in 0..sk {
                        *weights.offset((row * sk + j) as isize) = T::from_f64(if z > 0.0 { p[j as usize] / z } else { 0.0 });
                    }
                }
            }
        }
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn attn(dtype_bits: c_int, q: *const c_void, k: *const c_void, v: *const c_void,
                              keep: *const c_uchar, shape: *const i64, scale: f64, out: *mut c_void,
                              weights: *mut c_void) -> c_int {
    let shape = &*(shape as *const [i64; 7]);
    match dtype_bits {
        64 => kernel(q as *const f64, k as *const f64, v as *const f64, keep, shape, scale, out as *mut f64,
                     weights as *mut f64),
        32 => kernel(q as *const f32, k as *const f32, v as *const f32, keep, shape, scale, out as *mut f32,
                     weights as *mut f32),
        _ => 2,                                                   // a dtype this kernel does not take
    }
}
