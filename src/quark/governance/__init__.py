"""Model governance: which model serves, and the record of why.

    registry      an MLflow model registry: every registered run a version; aliases candidate,
                  production, archived (quark.governance.registry)
    policy        the gate a candidate passes before promotion: gain, no regression, safety,
                  a person's approval (quark.governance.policy, quark.governance.approval)
    audit         a hash-chained, append-only log of every decision; `quark audit verify`
    model_card    a Markdown card written from the manifests of the model's lineage

Configured by the `governance` group (conf/governance/). Nothing here is imported by the package
itself: MLflow loads only when a registry is opened.
"""
