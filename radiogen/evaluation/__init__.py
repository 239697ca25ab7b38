"""Offline evaluation of docs/design.md §5: realism, conditioning and the radiogenomic map.

All functions are pure numpy in / numpy out, seeded, without I/O:
- features: pyradiomics features of nodule slices and the phenotype feature of each program;
- realism: radiomic Fréchet distance and KID, background fidelity;
- conditioning: does a synthetic nodule's phenotype follow its gene source (retrieval);
- codes: clustering, linear probes and the PCA baseline of gene codes;
- radiomap: gene/code-feature association maps and the classical metagene pipeline;
- phenotype: differentiable phenotype proxies, the read-out every map estimator shares;
- estimators: gene x program map estimators behind one interface (direct, classical, regressors, the
  generator's synthesis maps) and their calibration (holdout randomisation test);
- link_metrics: how well a map recovers known links (AUROC, AUPRC, achieved FDP and power, FWER);
- truth_table: known truth from truth.json or a gene,program table; truth: program response and probes;
- objective: the validation map objective a sweep can optimise.
pipeline (with eval_data, eval_figures, map_table and report) is the `radiogen eval` run built from them.
"""
