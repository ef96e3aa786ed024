//! Reductions along an axis: shapes, numpy's AxisError, values against a naive reference, and
//! the same bytes however the result's range is split.

use shmpool_expr::{AxisReduction, Dtype, Error, Reduction, Value};

/// Reduces `data` (int64 values of `shape`) along `axis`, over result elements `range`.
fn run(kind: Reduction, data: &[i64], shape: &[u64], axis: i64, range: std::ops::Range<u64>) -> Vec<Value> {
    let (r, _) = AxisReduction::new(kind, Dtype::I64, shape, axis).unwrap();
    let d = r.result_dtype();
    let mut out = vec![0u8; (range.end - range.start) as usize * d.size()];
    let mut values = |flat: std::ops::Range<u64>, buf: &mut [u8]| {
        let s: &[u8] = bytemuck::cast_slice(&data[flat.start as usize..flat.end as usize]);
        buf.copy_from_slice(s);
        Ok(())
    };
    r.reduce_range(range, &mut values, &mut out).unwrap();
    out.chunks_exact(d.size()).map(|b| Value::from_le_bytes(d, b).unwrap()).collect()
}

#[test]
fn every_axis_of_a_3d_array_matches_a_naive_reduction() {
    let shape = [3u64, 5, 7];
    let data: Vec<i64> = (0..105).map(|v| (v * 37 % 101) - 50).collect();
    let at = |a: u64, b: u64, c: u64| data[(a * 35 + b * 7 + c) as usize];
    for axis in [0i64, 1, 2, -1, -2, -3] {
        let k = if axis < 0 { axis + 3 } else { axis } as usize;
        let (_, out_shape) = AxisReduction::new(Reduction::Sum, Dtype::I64, &shape, axis).unwrap();
        let mut rest = shape.to_vec();
        rest.remove(k);
        assert_eq!(out_shape, rest);
        let mut want_sum = Vec::new();
        let mut want_arg = Vec::new();
        for u in 0..rest[0] {
            for v in 0..rest[1] {
                let vals: Vec<i64> = (0..shape[k])
                    .map(|j| match k {
                        0 => at(j, u, v),
                        1 => at(u, j, v),
                        _ => at(u, v, j),
                    })
                    .collect();
                want_sum.push(Value::Int(vals.iter().sum(), Dtype::I64));
                let best = vals.iter().enumerate().max_by_key(|&(j, v)| (*v, std::cmp::Reverse(j))).unwrap().0;
                want_arg.push(Value::Int(best as i64, Dtype::I64));
            }
        }
        let n = want_sum.len() as u64;
        assert_eq!(run(Reduction::Sum, &data, &shape, axis, 0..n), want_sum, "axis {axis}");
        assert_eq!(run(Reduction::ArgMax, &data, &shape, axis, 0..n), want_arg, "axis {axis}");
        // Any split of the result gives the same values.
        let split: Vec<Value> = (0..n).flat_map(|e| run(Reduction::Sum, &data, &shape, axis, e..e + 1)).collect();
        assert_eq!(split, want_sum);
    }
}

#[test]
fn an_axis_beyond_the_dimensions_is_numpys_axis_error() {
    // A 0-d array takes axis 0 and -1 (numpy reduces its one element), no other.
    for (shape, axis) in [(&[3u64, 4][..], 2i64), (&[3, 4], -3), (&[], 1), (&[], -2)] {
        let e = AxisReduction::new(Reduction::Mean, Dtype::F64, shape, axis).unwrap_err();
        assert_eq!(e, Error::Axis { axis, ndim: shape.len() });
        assert_eq!(e.to_string(), format!("axis {axis} is out of bounds for array of dimension {}", shape.len()));
    }
}

#[test]
fn words_round_trip_and_an_empty_axis_is_numpys_error_for_max() {
    let (r, out) = AxisReduction::new(Reduction::Var, Dtype::F32, &[4, 0, 2], 1).unwrap();
    assert_eq!(out, [4, 2]);
    assert_eq!(AxisReduction::from_words(&r.to_words()), Some(r));
    // numpy refuses max/argmax along an empty axis before reducing, even for an empty result.
    for shape in [&[2u64, 0][..], &[0, 0]] {
        let e = AxisReduction::new(Reduction::Max, Dtype::F64, shape, 1).unwrap_err();
        assert_eq!(e.to_string(), "zero-size array to reduction operation maximum which has no identity");
        let e = AxisReduction::new(Reduction::ArgMax, Dtype::F64, shape, -1).unwrap_err();
        assert_eq!(e.to_string(), "attempt to get argmax of an empty sequence");
    }
    let (r, out) = AxisReduction::new(Reduction::Sum, Dtype::F64, &[], -1).unwrap();
    assert_eq!((out.len(), r.result_len(), r.input_len()), (0, 1, 1));
}

#[test]
fn an_infinite_value_sums_to_infinity_not_nan() {
    use shmpool_expr::reduce_bytes;
    for (vals, want) in [(vec![-f64::INFINITY], f64::NEG_INFINITY), (vec![1.0, f64::INFINITY, 2.0], f64::INFINITY)] {
        let (v, _) = reduce_bytes(Reduction::Sum, Dtype::F64, bytemuck::cast_slice(&vals)).unwrap();
        assert_eq!(v, Value::Float(want, Dtype::F64), "{vals:?}");
    }
    let (v, _) =
        reduce_bytes(Reduction::Sum, Dtype::F64, bytemuck::cast_slice(&[f64::INFINITY, f64::NEG_INFINITY])).unwrap();
    assert!(matches!(v, Value::Float(f, _) if f.is_nan()));
}

#[test]
fn short_rows_of_the_last_axis_reduce_together_the_same_as_one_by_one() {
    let shape = [3000u64, 3];
    let data: Vec<i64> = (0..9000).map(|v| (v * 7919 % 1013) - 500).collect();
    for kind in [Reduction::Sum, Reduction::ArgMin, Reduction::Var] {
        let all = run(kind, &data, &shape, -1, 0..3000);
        let one: Vec<Value> = (0..3000).flat_map(|e| run(kind, &data, &shape, 1, e..e + 1)).collect();
        assert_eq!(all, one, "{kind:?}");
        let want = match kind {
            Reduction::Sum => Value::Int(data[3..6].iter().sum(), Dtype::I64),
            Reduction::ArgMin => {
                let row = &data[3..6];
                let m = row.iter().min().unwrap();
                Value::Int(row.iter().position(|v| v == m).unwrap() as i64, Dtype::I64)
            }
            _ => {
                let row: Vec<f64> = data[3..6].iter().map(|&v| v as f64).collect();
                let mean = row.iter().sum::<f64>() / 3.0;
                Value::Float(row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 3.0, Dtype::F64)
            }
        };
        assert_eq!(all[1], want, "{kind:?}");
    }
}
