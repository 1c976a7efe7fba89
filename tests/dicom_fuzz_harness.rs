//! The fuzz targets' entry points run without libFuzzer: deterministic mutations (truncation,
//! byte flips, length-field stomps, splices) of valid DICOM and NIfTI inputs must give errors
//! or volumes, never a panic.

use std::path::Path;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 => bytes.truncate(rng.below(bytes.len() + 1)),
            1 => {
                for _ in 0..1 + rng.below(16) {
                    if !bytes.is_empty() {
                        let at = rng.below(bytes.len());
                        bytes[at] = rng.next() as u8;
                    }
                }
            }
            2 => {
                if bytes.len() > 4 {
                    let at = rng.below(bytes.len() - 4);
                    let value =
                        [[0xff, 0xff, 0xff, 0xff], [0xff, 0xff, 0xff, 0x7f], [0, 0, 0, 0], [1, 0, 0, 0]]
                            [rng.below(4)];
                    bytes[at..at + 4].copy_from_slice(&value);
                }
            }
            3 => {
                let from = rng.below(bytes.len() + 1);
                let tail = bytes[from..].to_vec();
                let at = rng.below(bytes.len() + 1);
                bytes.splice(at..at, tail.into_iter().take(512));
            }
            _ => {
                let at = rng.below(bytes.len() + 1);
                bytes.insert(at, rng.next() as u8);
            }
        }
    }
    bytes
}

fn site_packages() -> std::path::PathBuf {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".data/venv/lib");
    std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh", lib.display()))
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("python3"))
        .expect("python3.x in venv")
        .join("site-packages")
}

#[test]
fn dicom_fuzz_entry_survives_mutations() {
    let files = site_packages().join("pydicom/data/test_files");
    let mut seeds = Vec::new();
    for name in
        ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
    {
        let mut seed = vec![0u8];
        seed.extend(std::fs::read(files.join(name)).unwrap());
        seeds.push(seed);
    }
    let mut rng = XorShift(0x2545f4914f6cdd1d);
    let mut accepted = 0;
    // Time-boxed: some corrupt length fields make the third-party parser slow (seconds per
    // input); the inputs are the same on every run, how many are tried depends on the machine.
    let start = std::time::Instant::now();
    let mut rounds = 0;
    while rounds < 400 && (rounds < 30 || start.elapsed().as_secs_f64() < 8.0) {
        let input = mutate(&seeds[rounds % seeds.len()], &mut rng);
        if pedinorm::formats::dicom::assemble_fuzz_input(&input).is_ok() {
            accepted += 1;
        }
        rounds += 1;
    }
    // Unmutated seeds must load (the harness exercises the real path, not only early errors).
    for seed in &seeds {
        assert_eq!(pedinorm::formats::dicom::assemble_fuzz_input(seed).unwrap().len(), 1);
    }
    assert!(accepted < rounds, "every mutation loaded: the mutations do nothing");
}

#[test]
fn nifti_reader_survives_mutations() {
    let dir = tempfile::tempdir().unwrap();
    let grid = pedinorm_registration::Grid::axis_aligned([6, 5, 4], [1.0, 2.0, 3.0], [0.0; 3]).unwrap();
    let data = ndarray::Array3::from_shape_fn((6, 5, 4), |(i, j, k)| (i + 10 * j + 100 * k) as f32);
    let image = pedinorm_registration::Image::new(data, grid).unwrap();
    let mut seeds = Vec::new();
    for (name, voxel_type) in [
        ("a.nii", pedinorm::formats::nifti::VoxelType::I16),
        ("b.nii.gz", pedinorm::formats::nifti::VoxelType::F32),
    ] {
        let path = dir.path().join(name);
        pedinorm::formats::nifti::write_image(&path, &image, voxel_type).unwrap();
        seeds.push(std::fs::read(&path).unwrap());
    }
    let mut rng = XorShift(0x9e3779b97f4a7c15);
    let mut rejected = 0;
    for round in 0..2000 {
        let input = mutate(&seeds[round % 2], &mut rng);
        if pedinorm::formats::nifti::read_vector_image_from_bytes(&input, Path::new("mutated.nii")).is_err() {
            rejected += 1;
        }
    }
    for seed in &seeds {
        let back =
            pedinorm::formats::nifti::read_vector_image_from_bytes(seed, Path::new("seed.nii")).unwrap();
        assert_eq!(back[0].as_slice(), image.as_slice());
    }
    assert!(rejected > 100, "only {rejected} of 2000 mutations rejected");
}
