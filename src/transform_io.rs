//! Transform files: ITK text affine transforms and ANTs-convention NIfTI displacement fields (LPS at the boundary).
