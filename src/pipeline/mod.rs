//! Pipelines that chain steps over files: preprocessing, template builds, normative statistics, deviation maps.
