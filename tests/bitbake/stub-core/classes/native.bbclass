# Stand-in for OE-core's native.bbclass: BitBake itself renames PN for BBCLASSEXTEND variants.
CLASSOVERRIDE = "class-native"
