//! Orientation codes of a voxel → world affine, as image viewers print them.

/// The axis codes (`R`/`L`, `A`/`P`, `S`/`I`) the voxel axes of a RAS+ affine (row-major)
/// point to most, e.g. `RAS` or `LPI`.
pub fn orientation_codes(affine: &[[f64; 4]; 4]) -> String {
    (0..3)
        .map(|column| {
            let axis = (0..3)
                .max_by(|&a, &b| affine[a][column].abs().total_cmp(&affine[b][column].abs()))
                .unwrap_or(column);
            let positive = affine[axis][column] >= 0.0;
            match (axis, positive) {
                (0, true) => 'R',
                (0, false) => 'L',
                (1, true) => 'A',
                (1, false) => 'P',
                (_, true) => 'S',
                (_, false) => 'I',
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_largest_component_of_each_axis() {
        let ras = [[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        assert_eq!(orientation_codes(&ras), "RAS");
        let lpi = [[-1.0, 0.1, 0.0, 0.0], [0.0, -1.0, 0.2, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        assert_eq!(orientation_codes(&lpi), "LPI");
        // Axial slices stored sagittally: voxel axes point to A, S and R.
        let sagittal =
            [[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        assert_eq!(orientation_codes(&sagittal), "ASR");
    }
}
