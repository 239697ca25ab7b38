"""Offline evaluation of docs/design.md §5: realism, conditioning and the radiogenomic map.

All functions are pure numpy in / numpy out, seeded, without I/O:
- features: pyradiomics features of nodule slices and the phenotype feature of each program;
- realism: radiomic Fréchet distance and KID, background fidelity;
- conditioning: does a synthetic nodule's phenotype follow its gene source (retrieval);
- codes: clustering, linear probes and the PCA baseline of gene codes;
- radiomap: gene/code-feature association maps and the classical metagene pipeline;
- truth: scores against the synthetic cohort's known gene -> program links.
"""
