//! One test per rule, with header values of Siemens, GE and Philips protocols (as their
//! exports carry them: times in ms, multi-valued attributes split on `\`).

use super::*;

fn split(values: &str) -> Vec<String> {
    values.split('\\').filter(|v| !v.is_empty()).map(str::to_owned).collect()
}

/// A series as a vendor writes it: field, ScanningSequence, SequenceVariant, TR, TE, TI (0 for
/// none), 2D/3D, number of images, description.
#[allow(clippy::too_many_arguments)]
fn series(
    manufacturer: &str,
    tesla: f64,
    sequence: &str,
    variant: &str,
    tr: f64,
    te: f64,
    ti: f64,
    kind: &str,
    slices: usize,
    description: &str,
) -> SeriesAttributes {
    SeriesAttributes {
        manufacturer: Some(manufacturer.into()),
        magnetic_field_strength: Some(tesla),
        scanning_sequence: split(sequence),
        sequence_variant: split(variant),
        repetition_times_ms: vec![tr],
        echo_times_ms: vec![te],
        inversion_times_ms: if ti > 0.0 { vec![ti] } else { vec![] },
        image_type: split("ORIGINAL\\PRIMARY\\M\\ND"),
        acquisition_type: Some(kind.into()),
        slices,
        orientations: vec![[20, 0, 0, 0, 20, 0]],
        descriptions: vec![description.into()],
        ..Default::default()
    }
}

fn check(attributes: &SeriesAttributes, class: SeriesClass, rule: Rule) {
    let result = classify(attributes);
    assert_eq!((result.class, result.rule), (class, rule), "{}", result.reason);
    assert!(!result.reason.is_empty());
}

// --- T1w ---------------------------------------------------------------------------------

#[test]
fn siemens_mprage_3t_and_1_5t_are_t1w_by_prepared_gradient_echo() {
    let mut prisma =
        series("SIEMENS", 3.0, "GR\\IR", "SK\\SP\\MP", 2300.0, 2.98, 900.0, "3D", 176, "t1_mprage_sag");
    prisma.sequence_name = Some("*tfl3d1_16ns".into());
    prisma.flip_angle_deg = Some(9.0);
    check(&prisma, SeriesClass::T1w, Rule::PreparedGradientEcho);
    let avanto = series("SIEMENS", 1.5, "GR\\IR", "SP\\MP", 2160.0, 3.93, 1100.0, "3D", 160, "MPRAGE");
    check(&avanto, SeriesClass::T1w, Rule::PreparedGradientEcho);
    // The rule fires without the description and without the InversionTime (variant MP).
    let mut bare = series("SIEMENS", 3.0, "GR\\IR", "SP\\MP", 2300.0, 2.98, 0.0, "3D", 176, "");
    bare.descriptions.clear();
    check(&bare, SeriesClass::T1w, Rule::PreparedGradientEcho);
}

#[test]
fn ge_bravo_with_ir_scan_option_is_t1w() {
    let mut bravo =
        series("GE MEDICAL SYSTEMS", 3.0, "GR", "SS\\SK", 8.2, 3.2, 450.0, "3D", 168, "Sag BRAVO");
    bravo.scan_options = split("FAST_GEMS\\EDR_GEMS\\FILTERED_GEMS\\ACC_GEMS\\IR_GEMS");
    bravo.flip_angle_deg = Some(12.0);
    check(&bravo, SeriesClass::T1w, Rule::PreparedGradientEcho);
    // IR-FSPGR stated only in ScanOptions (no TI written).
    bravo.inversion_times_ms.clear();
    check(&bravo, SeriesClass::T1w, Rule::PreparedGradientEcho);
}

#[test]
fn philips_t1_tfe_is_t1w_prepared_or_spoiled() {
    let tfe = series("Philips Medical Systems", 3.0, "GR", "MP", 8.1, 3.7, 0.0, "3D", 180, "T1 3D TFE");
    check(&tfe, SeriesClass::T1w, Rule::PreparedGradientEcho);
    let mut ffe = series("Philips Medical Systems", 1.5, "GR", "SP", 25.0, 4.6, 0.0, "3D", 150, "3D T1 FFE");
    ffe.flip_angle_deg = Some(30.0);
    check(&ffe, SeriesClass::T1w, Rule::SpoiledGradientEcho);
}

#[test]
fn spin_echo_t1_uses_the_field_strength_tr_range() {
    let se = series("SIEMENS", 1.5, "SE", "SK\\SP", 550.0, 9.5, 0.0, "2D", 24, "t1_se_tra");
    check(&se, SeriesClass::T1w, Rule::ShortTrShortTe);
    // TR 1000 ms is T1w at 3 T but not at 1.5 T (where T1 recovery is faster).
    let at_3t = series("GE MEDICAL SYSTEMS", 3.0, "SE", "SK", 1000.0, 12.0, 0.0, "2D", 24, "");
    check(&at_3t, SeriesClass::T1w, Rule::ShortTrShortTe);
    let at_1_5t = SeriesAttributes { magnetic_field_strength: Some(1.5), ..at_3t.clone() };
    check(&at_1_5t, SeriesClass::Other, Rule::SpinEchoMixed);
    // ... unless the description says T1: the hint chooses within the gap, physics allows it.
    let hinted = SeriesAttributes { descriptions: vec!["T1 SE AX".into()], ..at_1_5t };
    check(&hinted, SeriesClass::T1w, Rule::IntermediateRepetitionT1Hint);
}

#[test]
fn t1_flair_has_an_intermediate_ti_and_short_te() {
    let mut ge =
        series("GE MEDICAL SYSTEMS", 3.0, "SE\\IR", "SK\\OSP", 2500.0, 24.0, 920.0, "2D", 30, "Ax T1 FLAIR");
    ge.scan_options = split("FAST_GEMS\\IR_GEMS");
    check(&ge, SeriesClass::T1w, Rule::T1Flair);
    let siemens = series("SIEMENS", 1.5, "SE\\IR", "SK\\SP\\MP", 2000.0, 9.0, 860.0, "2D", 25, "t1_tirm_tra");
    check(&siemens, SeriesClass::T1w, Rule::T1Flair);
}

#[test]
fn mp2rage_uniform_is_t1w_and_its_second_inversion_is_not() {
    let mut uni =
        series("SIEMENS", 3.0, "GR\\IR", "SK\\SP\\MP", 5000.0, 2.9, 700.0, "3D", 176, "mp2rage_UNI");
    uni.image_type = split("DERIVED\\PRIMARY\\M\\ND\\UNI");
    check(&uni, SeriesClass::T1w, Rule::Mp2rageUniform);
    let inv2 = series("SIEMENS", 3.0, "GR\\IR", "SK\\SP\\MP", 5000.0, 2.9, 2500.0, "3D", 176, "mp2rage_INV2");
    check(&inv2, SeriesClass::Other, Rule::LateInversionGradientEcho);
    let mut map = uni.clone();
    map.image_type = split("DERIVED\\PRIMARY\\T1 MAP\\ND");
    check(&map, SeriesClass::Other, Rule::QuantitativeMap);
}

#[test]
fn enhanced_mr_acquisition_contrast_decides() {
    let mut enhanced = series("Philips", 3.0, "", "", 3000.0, 80.0, 0.0, "3D", 200, "");
    enhanced.acquisition_contrast = Some("T1".into());
    check(&enhanced, SeriesClass::T1w, Rule::AcquisitionContrast);
    enhanced.acquisition_contrast = Some("T2".into());
    check(&enhanced, SeriesClass::T2w, Rule::AcquisitionContrast);
    enhanced.acquisition_contrast = Some("PROTON_DENSITY".into());
    check(&enhanced, SeriesClass::Other, Rule::AcquisitionContrastOther);
}

// --- T2w ---------------------------------------------------------------------------------

#[test]
fn tse_fse_and_3d_t2_are_t2w() {
    let mut siemens = series("SIEMENS", 3.0, "SE", "SK\\SP\\OSP", 6000.0, 96.0, 0.0, "2D", 35, "t2_tse_tra");
    siemens.sequence_name = Some("*tse2d1_15".into());
    check(&siemens, SeriesClass::T2w, Rule::LongTrLongTe);
    let ge = series("GE MEDICAL SYSTEMS", 1.5, "SE", "SK", 4000.0, 102.0, 0.0, "2D", 24, "AX T2 FSE");
    check(&ge, SeriesClass::T2w, Rule::LongTrLongTe);
    let philips = series("Philips Medical Systems", 3.0, "SE", "SK", 3000.0, 80.0, 0.0, "2D", 30, "T2W_TSE");
    check(&philips, SeriesClass::T2w, Rule::LongTrLongTe);
    // SPACE reports its long effective TE.
    let space = series("SIEMENS", 3.0, "SE", "SK\\SP\\OSP", 3200.0, 409.0, 0.0, "3D", 176, "t2_spc_sag");
    check(&space, SeriesClass::T2w, Rule::LongTrLongTe);
    // Neonatal protocol: very long TR and TE.
    let infant = series("SIEMENS", 3.0, "SE", "SK\\SP", 12000.0, 160.0, 0.0, "2D", 60, "t2 neonate");
    check(&infant, SeriesClass::T2w, Rule::LongTrLongTe);
}

#[test]
fn intermediate_te_is_t2w_only_with_a_t2_description_and_depends_on_field() {
    // TE 78 ms: T2w at 3 T (≥ 75), between PD and T2 at 1.5 T (< 80).
    let at_3t = series("SIEMENS", 3.0, "SE", "SK", 4000.0, 78.0, 0.0, "2D", 30, "");
    check(&at_3t, SeriesClass::T2w, Rule::LongTrLongTe);
    let at_1_5t = SeriesAttributes { magnetic_field_strength: Some(1.5), ..at_3t.clone() };
    check(&at_1_5t, SeriesClass::Other, Rule::IntermediateEcho);
    let hinted = SeriesAttributes { descriptions: vec!["T2 TSE AX".into()], ..at_1_5t.clone() };
    check(&hinted, SeriesClass::T2w, Rule::IntermediateEchoT2Hint);
    // A FLAIR description is no T2 hint.
    let wrong_hint = SeriesAttributes { descriptions: vec!["FLAIR".into()], ..at_1_5t };
    check(&wrong_hint, SeriesClass::Other, Rule::IntermediateEcho);
}

#[test]
fn proton_density_is_other() {
    let pd = series("GE MEDICAL SYSTEMS", 3.0, "SE", "SK", 3000.0, 20.0, 0.0, "2D", 30, "PD FSE");
    check(&pd, SeriesClass::Other, Rule::ProtonDensity);
    let mut dual = series("SIEMENS", 1.5, "SE", "SK", 3000.0, 12.0, 0.0, "2D", 40, "pd+t2_tse");
    dual.echo_times_ms.push(96.0);
    check(&dual, SeriesClass::Other, Rule::SeveralEchoTimes);
}

// --- FLAIR -------------------------------------------------------------------------------

#[test]
fn t2_flair_2d_and_3d_of_each_vendor() {
    let mut siemens = series(
        "SIEMENS",
        3.0,
        "SE\\IR",
        "SK\\SP\\MP\\OSP",
        9000.0,
        81.0,
        2500.0,
        "2D",
        30,
        "t2_tirm_tra_dark-fluid",
    );
    siemens.sequence_name = Some("*tir2d1_21".into());
    check(&siemens, SeriesClass::Flair, Rule::FluidAttenuatedInversion);
    let space =
        series("SIEMENS", 3.0, "SE\\IR", "SK\\SP\\MP", 5000.0, 387.0, 1800.0, "3D", 176, "t2_spc_da-fl_sag");
    check(&space, SeriesClass::Flair, Rule::FluidAttenuatedInversion);
    let ge =
        series("GE MEDICAL SYSTEMS", 1.5, "SE\\IR", "SK\\OSP", 9000.0, 130.0, 2250.0, "2D", 24, "AX FLAIR");
    check(&ge, SeriesClass::Flair, Rule::FluidAttenuatedInversion);
    let cube =
        series("GE MEDICAL SYSTEMS", 3.0, "SE\\IR", "SK", 6000.0, 130.0, 1800.0, "3D", 200, "Sag CUBE FLAIR");
    check(&cube, SeriesClass::Flair, Rule::FluidAttenuatedInversion);
    let philips =
        series("Philips Medical Systems", 3.0, "SE\\IR", "SK", 11000.0, 125.0, 2800.0, "2D", 30, "FLAIR");
    check(&philips, SeriesClass::Flair, Rule::FluidAttenuatedInversion);
}

#[test]
fn the_description_never_overrides_the_physics() {
    let flair = series("SIEMENS", 3.0, "SE\\IR", "SK\\SP\\MP", 9000.0, 81.0, 2500.0, "2D", 30, "T1 MPRAGE");
    let result = classify(&flair);
    assert_eq!(result.class, SeriesClass::Flair);
    assert_eq!(result.hint, Some(SeriesClass::T1w));
    let mut unknown = series("SIEMENS", 3.0, "GR\\IR", "SP\\MP", 0.0, 0.0, 0.0, "3D", 176, "T1 MPRAGE");
    unknown.repetition_times_ms.clear();
    unknown.echo_times_ms.clear();
    check(&unknown, SeriesClass::Other, Rule::TimingMissing);
}

#[test]
fn long_inversion_with_short_te_or_tr_is_other() {
    let pd_flair = series("SIEMENS", 3.0, "SE\\IR", "SK\\SP\\MP", 9000.0, 12.0, 2500.0, "2D", 30, "pd flair");
    check(&pd_flair, SeriesClass::Other, Rule::LongInversionOther);
    // A 2-D acquisition needs TR ≥ 6000 ms for a CSF-nulling TI of 2500 ms to be FLAIR.
    let short_tr = series("SIEMENS", 3.0, "SE\\IR", "SK", 4500.0, 90.0, 2500.0, "2D", 30, "");
    check(&short_tr, SeriesClass::Other, Rule::LongInversionOther);
}

// --- other inversion recovery ------------------------------------------------------------

#[test]
fn stir_depends_on_the_field_strength() {
    let at_1_5t = series("GE MEDICAL SYSTEMS", 1.5, "SE\\IR", "SK", 4000.0, 40.0, 150.0, "2D", 24, "STIR");
    check(&at_1_5t, SeriesClass::Other, Rule::ShortTauInversion);
    let at_3t = series("SIEMENS", 3.0, "SE\\IR", "SK\\SP\\MP", 4000.0, 40.0, 280.0, "2D", 24, "t2_tirm_cor");
    check(&at_3t, SeriesClass::Other, Rule::ShortTauInversion);
    let same_at_1_5t = SeriesAttributes { magnetic_field_strength: Some(1.5), ..at_3t };
    check(&same_at_1_5t, SeriesClass::Other, Rule::InversionAmbiguous);
}

#[test]
fn ambiguous_inversion_cases_fall_to_other() {
    let between =
        series("Philips Medical Systems", 3.0, "SE\\IR", "SK", 8000.0, 100.0, 1400.0, "2D", 30, "FLAIR");
    check(&between, SeriesClass::Other, Rule::InversionAmbiguous);
    let mut no_ti = series("SIEMENS", 3.0, "SE\\IR", "SK", 8000.0, 100.0, 0.0, "2D", 30, "FLAIR");
    no_ti.inversion_times_ms.clear();
    check(&no_ti, SeriesClass::Other, Rule::InversionTimeMissing);
    let long_te_gre = series("SIEMENS", 3.0, "GR\\IR", "SP\\MP", 2000.0, 20.0, 900.0, "3D", 100, "");
    check(&long_te_gre, SeriesClass::Other, Rule::PreparedGradientEchoLongEcho);
    let mut two_ti = series("SIEMENS", 3.0, "SE\\IR", "SK", 8000.0, 100.0, 700.0, "2D", 30, "");
    two_ti.inversion_times_ms.push(2500.0);
    check(&two_ti, SeriesClass::Other, Rule::SeveralInversionTimes);
}

// --- DWI ---------------------------------------------------------------------------------

#[test]
fn diffusion_by_b_value_or_marker() {
    let mut siemens = series("SIEMENS", 3.0, "EP", "SK\\SP", 5400.0, 89.0, 0.0, "2D", 30, "ep2d_diff");
    siemens.max_b_value = Some(1000.0);
    check(&siemens, SeriesClass::Dwi, Rule::DiffusionBValue);
    let mut ge = series("GE MEDICAL SYSTEMS", 1.5, "EP\\SE", "SK", 8000.0, 85.0, 0.0, "2D", 25, "");
    ge.max_b_value = Some(1000.0);
    check(&ge, SeriesClass::Dwi, Rule::DiffusionBValue);
    // Philips DWI says SE, not EP: the b-value keeps it from looking like a T2w TSE.
    let mut philips = series("Philips Medical Systems", 3.0, "SE", "SK", 4000.0, 80.0, 0.0, "2D", 30, "DWI");
    philips.max_b_value = Some(1000.0);
    check(&philips, SeriesClass::Dwi, Rule::DiffusionBValue);
    let mut adc = series("SIEMENS", 3.0, "EP", "SK\\SP", 5400.0, 89.0, 0.0, "2D", 30, "ep2d_diff_ADC");
    adc.image_type = split("DERIVED\\PRIMARY\\DIFFUSION\\ADC\\ND");
    check(&adc, SeriesClass::Dwi, Rule::DiffusionMarker);
    let mut b0_only = series("SIEMENS", 3.0, "EP", "SK\\SP", 5400.0, 89.0, 0.0, "2D", 30, "");
    b0_only.sequence_name = Some("*ep_b0".into());
    b0_only.max_b_value = Some(0.0);
    check(&b0_only, SeriesClass::Dwi, Rule::DiffusionMarker);
}

#[test]
fn echo_planar_without_diffusion_is_other() {
    let bold = series("SIEMENS", 3.0, "EP", "SK\\SS", 2000.0, 30.0, 0.0, "2D", 36, "rest_bold");
    check(&bold, SeriesClass::Other, Rule::EchoPlanar);
}

// --- localizer ---------------------------------------------------------------------------

#[test]
fn localizers_by_image_type_orientations_slices_and_scout_sequences() {
    let mut ge = series("GE MEDICAL SYSTEMS", 1.5, "GR", "SS", 5.0, 1.6, 0.0, "2D", 15, "3-Plane Loc");
    ge.image_type = split("ORIGINAL\\PRIMARY\\LOCALIZER");
    check(&ge, SeriesClass::Localizer, Rule::LocalizerImageType);
    let mut three_plane = series("SIEMENS", 3.0, "GR", "SP", 8.6, 4.0, 0.0, "2D", 9, "localizer");
    three_plane.orientations = vec![[20, 0, 0, 0, 20, 0], [0, 20, 0, 0, 0, -20], [20, 0, 0, 0, 0, -20]];
    check(&three_plane, SeriesClass::Localizer, Rule::SeveralOrientations);
    let single = series("Philips Medical Systems", 3.0, "GR", "SP", 11.0, 4.6, 0.0, "2D", 1, "Survey");
    check(&single, SeriesClass::Localizer, Rule::TooFewSlices);
    let mut scout = series("SIEMENS", 3.0, "GR", "SP", 3.15, 1.37, 0.0, "3D", 128, "AAHScout");
    scout.sequence_name = Some("*fl3d1_ns".into());
    check(&scout, SeriesClass::Localizer, Rule::ScoutSequence);
    // A 2-D FLASH with many slices is no scout.
    let mut flash = series("SIEMENS", 1.5, "GR", "SP", 250.0, 4.8, 0.0, "2D", 24, "t1_fl2d_tra");
    flash.sequence_name = Some("*fl2d1".into());
    flash.flip_angle_deg = Some(70.0);
    check(&flash, SeriesClass::T1w, Rule::SpoiledGradientEcho);
}

// --- other -------------------------------------------------------------------------------

#[test]
fn gradient_echo_weightings_that_are_not_t1w() {
    let mut swi = series("SIEMENS", 3.0, "GR", "SP", 27.0, 20.0, 0.0, "3D", 72, "SWI");
    swi.sequence_name = Some("*swi3d1r".into());
    check(&swi, SeriesClass::Other, Rule::T2StarGradientEcho);
    let mut tof = series("SIEMENS", 3.0, "GR", "SP", 22.0, 3.6, 0.0, "3D", 150, "tof_3d_multi-slab");
    tof.sequence_name = Some("*fl3d1r_t70".into());
    check(&tof, SeriesClass::Other, Rule::Angiography);
    let mut pd_gre = series("SIEMENS", 3.0, "GR", "SP", 20.0, 4.0, 0.0, "3D", 120, "");
    pd_gre.flip_angle_deg = Some(4.0);
    check(&pd_gre, SeriesClass::Other, Rule::GradientEchoWeak);
    let fiesta = series("GE MEDICAL SYSTEMS", 1.5, "GR", "SS\\SK", 4.4, 2.2, 0.0, "3D", 60, "FIESTA");
    check(&fiesta, SeriesClass::Other, Rule::BalancedSsfp);
}

#[test]
fn other_modalities_and_samples() {
    let mut ct = series("SIEMENS", 3.0, "SE", "SK", 4000.0, 100.0, 0.0, "2D", 30, "T2");
    ct.modality = Some("CT".into());
    check(&ct, SeriesClass::Other, Rule::NotMr);
    // One instance standing for its series: the image count decides nothing.
    let mut one = series("SIEMENS", 1.5, "GR\\IR", "SP\\MP\\OSP", 1900.0, 2.97, 1100.0, "3D", 1, "");
    check(&one, SeriesClass::Localizer, Rule::TooFewSlices);
    one.sample = true;
    check(&one, SeriesClass::T1w, Rule::PreparedGradientEcho);
    one.sequence_name = Some("*fl2d1".into());
    check(&one, SeriesClass::Localizer, Rule::ScoutSequence);
}

#[test]
fn derived_phase_and_unknown_sequences_are_other() {
    let mut mpr = series("SIEMENS", 3.0, "GR\\IR", "SP\\MP", 2300.0, 2.98, 900.0, "3D", 60, "t1_mpr_tra");
    mpr.image_type = split("DERIVED\\SECONDARY\\MPR");
    check(&mpr, SeriesClass::Other, Rule::Derived);
    let mut phase = series("SIEMENS", 3.0, "GR", "SP", 27.0, 20.0, 0.0, "3D", 72, "SWI_Pha");
    phase.image_type = split("ORIGINAL\\PRIMARY\\P\\ND");
    check(&phase, SeriesClass::Other, Rule::PhaseImage);
    let research =
        series("GE MEDICAL SYSTEMS", 3.0, "RM", "NONE", 3000.0, 90.0, 0.0, "3D", 100, "T2 research");
    check(&research, SeriesClass::Other, Rule::SequenceUnknown);
}

// --- plumbing ----------------------------------------------------------------------------

#[test]
fn ranges_follow_the_field_and_unknown_is_the_wider_bound() {
    assert_eq!(Ranges::for_field(Some(1.494)), RANGES_1_5T);
    assert_eq!(Ranges::for_field(Some(2.89362)), RANGES_3T);
    let unknown = Ranges::for_field(None);
    assert_eq!(unknown.t1_tr_max, RANGES_3T.t1_tr_max);
    assert_eq!(unknown.t2_te_min, RANGES_3T.t2_te_min);
    assert_eq!(unknown.stir_ti_max, RANGES_3T.stir_ti_max);
}

#[test]
fn hints_read_descriptions_of_each_vendor() {
    let hint = |text: &str| description_hint(&[text.to_owned()]);
    assert_eq!(hint("t1_mprage_sag_p2"), Some(SeriesClass::T1w));
    assert_eq!(hint("Sag FSPGR BRAVO"), Some(SeriesClass::T1w));
    assert_eq!(hint("T2W_TSE"), Some(SeriesClass::T2w));
    assert_eq!(hint("t2_tirm_tra_dark-fluid"), Some(SeriesClass::Flair));
    assert_eq!(hint("Ax T1 FLAIR"), Some(SeriesClass::T1w));
    assert_eq!(hint("ep2d_diff_mddw_20"), Some(SeriesClass::Dwi));
    assert_eq!(hint("3-Plane Loc"), Some(SeriesClass::Localizer));
    assert_eq!(hint("SWI"), None);
}

#[test]
fn classes_round_trip_their_names() {
    for class in SeriesClass::ALL {
        assert_eq!(SeriesClass::parse(class.as_str()), Some(class));
        assert_eq!(serde_json::to_value(class).unwrap(), class.as_str());
    }
    assert_eq!(SeriesClass::parse("flair"), Some(SeriesClass::Flair));
    assert_eq!(SeriesClass::parse("PD"), None);
}

#[test]
fn merging_counts_images_and_keeps_distinct_values() {
    let one = series("SIEMENS", 3.0, "EP", "SK", 5400.0, 89.0, 0.0, "2D", 1, "");
    let mut diffusion = SeriesAttributes { max_b_value: Some(1000.0), ..one.clone() };
    diffusion.image_type = split("ORIGINAL\\PRIMARY\\DIFFUSION\\NONE");
    let mut merged = SeriesAttributes { max_b_value: Some(0.0), ..one.clone() };
    merged.merge(&diffusion);
    merged.merge(&one);
    assert_eq!(merged.slices, 3);
    assert_eq!(merged.max_b_value, Some(1000.0));
    assert_eq!(merged.echo_times_ms, [89.0]);
    assert!(merged.image_type.contains(&"DIFFUSION".to_owned()));
    let mut other_te = one.clone();
    other_te.echo_times_ms = vec![12.0];
    merged.merge(&other_te);
    assert_eq!(merged.echo_times_ms, [89.0, 12.0]);
}
