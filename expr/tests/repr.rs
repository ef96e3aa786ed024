//! numpy 2's repr of arrays, checked against strings numpy 2.4 printed for the same arrays
//! (the CLI tests compare against a live numpy too: tests/reduce_axis.rs).

use shmpool_expr::{array_repr, Dtype};

fn f64s(v: &[f64]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

#[test]
fn float_arrays_are_padded_to_a_common_format_as_numpy() {
    let r = |v: &[f64]| array_repr(Dtype::F64, &[v.len() as u64], &f64s(v)).unwrap();
    assert_eq!(r(&[6.0, 22.0, 38.0]), "array([ 6., 22., 38.])");
    assert_eq!(r(&[1e-5, 1.0, f64::NAN]), "array([1.e-05, 1.e+00,    nan])");
    assert_eq!(r(&[1.0, 1.25, 1.5, 1.75]), "array([1.  , 1.25, 1.5 , 1.75])");
    assert_eq!(r(&[1.5, 2.0, f64::NEG_INFINITY]), "array([ 1.5,  2. , -inf])");
    let big: Vec<f64> = (0..2000).map(f64::from).collect();
    assert_eq!(
        r(&big),
        "array([0.000e+00, 1.000e+00, 2.000e+00, ..., 1.997e+03, 1.998e+03,\n       1.999e+03], shape=(2000,))"
    );
}

#[test]
fn other_dtypes_nesting_and_extras_are_numpys() {
    let ints: Vec<i64> = (0..24).map(|v| v * 1_000_000).collect();
    assert_eq!(
        array_repr(Dtype::I64, &[2, 3, 4], bytemuck::cast_slice(&ints)).unwrap(),
        "array([[[       0,  1000000,  2000000,  3000000],\n        [ 4000000,  5000000,  6000000,  7000000],\n        \
         [ 8000000,  9000000, 10000000, 11000000]],\n\n       [[12000000, 13000000, 14000000, 15000000],\n        \
         [16000000, 17000000, 18000000, 19000000],\n        [20000000, 21000000, 22000000, 23000000]]])"
    );
    let f: Vec<f32> = [1.5f32, 2.0, f32::NEG_INFINITY].repeat(2);
    assert_eq!(
        array_repr(Dtype::F32, &[2, 3], bytemuck::cast_slice(&f)).unwrap(),
        "array([[ 1.5,  2. , -inf],\n       [ 1.5,  2. , -inf]], dtype=float32)"
    );
    assert_eq!(array_repr(Dtype::F64, &[0, 3], &[]).unwrap(), "array([], shape=(0, 3), dtype=float64)");
    assert_eq!(array_repr(Dtype::Bool, &[2], &[1, 0]).unwrap(), "array([ True, False])");
    assert_eq!(
        array_repr(Dtype::I32, &[2], bytemuck::cast_slice(&[3i32, -4])).unwrap(),
        "array([ 3, -4], dtype=int32)"
    );
    assert_eq!(array_repr(Dtype::F64, &[], &f64s(&[2.5])).unwrap(), "np.float64(2.5)");
    assert_eq!(array_repr(Dtype::F64, &[2], &f64s(&[2.5])), None, "bytes not the shape's elements");
}
