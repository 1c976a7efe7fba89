"""A first session with pedinorm in Python: a case against a normative database.

Run as ``python quickstart.py NORMDB CASE AGE SEX`` (e.g. the database and a case of
``pedinorm demo``). Every step is one call; images are nibabel-compatible throughout.
"""

import sys
import tempfile

import nibabel
import numpy as np

import pedinorm

normdb_path, case_path, age, sex = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]

# The database: its brackets, and the template and normative model at the case's age.
db = pedinorm.NormDb.open(normdb_path)
bracket = db.bracket(age)
template = db.template(bracket)
model = db.model(age, sex)
print(f"bracket {bracket}: template {template.shape}, model from {model['effective_n']:.1f} normals")

# The case as nibabel loads it, registered to the template like `pedinorm register`.
case = nibabel.load(case_path)
registration = pedinorm.register(template, case, preset="affine")
warped = registration.warped.to_nibabel()  # a nibabel.Nifti1Image on the template grid
print("case on the template grid:", warped.shape)

# Where does the template's centre lie in the case?
print("template centre in the case (mm):", registration.transform_points([[0.0, 0.0, 0.0]])[0].round(1))

# Deviation maps, clusters and the region table, as `pedinorm deviation` computes them.
result = pedinorm.deviation(db, case, age, sex)
z = result.z["intensity"].to_nibabel()
print(result)
print("largest |z| in template space:", float(np.abs(z.get_fdata()).max()).__round__(2))
for cluster in result.clusters[:3]:
    print(f"  cluster {cluster['label']}: {cluster['channel']} {cluster['direction']}, "
          f"{cluster['volume_mm3']:.0f} mm3, peak z {cluster['peak_z']:.1f}")
table = result.table("clusters")  # dict of columns: pandas.DataFrame(table)
print("columns of the cluster table:", ", ".join(list(table)[:6]), "...")

# Maps save as NIfTI for any viewer; the registration as ANTs files.
with tempfile.TemporaryDirectory() as folder:
    result.z["intensity"].save(f"{folder}/intensity_z.nii.gz")
    print("written:", registration.save(f"{folder}/case_to_template_"))
