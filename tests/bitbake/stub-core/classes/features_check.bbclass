# Stand-in for OE-core's features_check.bbclass, DISTRO part only: a recipe whose
# REQUIRED_DISTRO_FEATURES are not all in DISTRO_FEATURES is skipped with the message OE-core
# gives ("using DISTRO 'x', which is missing required DISTRO_FEATURES: 'y'").
python () {
    required = set((d.getVar('REQUIRED_DISTRO_FEATURES') or '').split())
    missing = required - set((d.getVar('DISTRO_FEATURES') or '').split())
    if missing:
        raise bb.parse.SkipRecipe("using DISTRO '%s', which is missing required DISTRO_FEATURES: '%s'"
                                  % (d.getVar('DISTRO'), ' '.join(sorted(missing))))
}
