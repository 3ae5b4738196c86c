# Sourced by fetch-kernel.sh and arm64-sysroot.sh: the options that point apt at a private configuration kept in a
# directory of the cache (its own sources.list, lists, archives and no preferences) for one architecture, so the
# system's apt sources and lists are never touched.
#   private_apt_opts DIR ARCH    sets the array APT_OPTS
private_apt_opts() {
  local adir=$1 arch=$2
  APT_OPTS=(-o "Dir::Etc::SourceList=$adir/sources.list" -o "Dir::Etc::SourceParts=$adir/parts"
            -o "Dir::State::Lists=$adir/lists" -o "Dir::Cache=$adir" -o "Dir::Cache::archives=$adir/archives"
            -o "Dir::Etc::Preferences=$adir/prefs/none" -o "Dir::Etc::PreferencesParts=$adir/prefs"
            -o "APT::Architecture=$arch" -o "APT::Architectures=$arch")
}
