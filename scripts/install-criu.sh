#!/bin/sh
# Install CRIU (>= 4.2) for outlast's checkpoint-resume, into a private prefix.
#
#   sh scripts/install-criu.sh [PREFIX]
#
# PREFIX: $1, else $OUTLAST_CRIU_PREFIX, else /opt/outlast-criu as root,
# else $HOME/.local/share/outlast/criu. outlast looks in both defaults; a
# custom PREFIX needs OUTLAST_CRIU_PREFIX (or OUTLAST_CRIU=PREFIX/bin/criu)
# set for the runtime as well.
#
# How: Debian's criu package from a newer suite (forky: criu 4.2.x) and its
# whole runtime closure, glibc and loader included, are downloaded by apt-get
# with private state (own sources list, lists, cache and an EMPTY dpkg status,
# so apt resolves every dependency) and unpacked with dpkg-deb into
# PREFIX/root. PREFIX/bin/criu is a wrapper that runs criu through the private
# loader. The system libc, dpkg database and apt configuration are not touched.
# Why not the distribution's criu: bookworm's 3.17 fails `criu check` on 6.x
# kernels (vDSO), and 4.1.x cannot dump any inet socket on kernels >= 6.16.
#
# Idempotent: when PREFIX already holds a criu >= 4.2 that runs, it only runs
# `criu check` (well under a second). Exit status 0 also when this host cannot
# checkpoint (not Linux, not Debian-like, `criu check` fails): outlast then
# keeps waiting processes alive instead. Exit status 1 only when an install
# was attempted and failed (e.g. the download).
#
# Knobs (environment):
#   OUTLAST_CRIU_FORCE=1   reinstall even if PREFIX already works
#   OUTLAST_CRIU_SUITE     Debian suite(s), space separated (default: forky)
#   OUTLAST_CRIU_MIRROR    Debian mirror (default: the Debian mirror in this
#                          machine's apt sources, else http://deb.debian.org/debian)
#   OUTLAST_CRIU_DEBS      directory of already downloaded .debs (e.g. a copy of
#                          PREFIX/debs with its SHA256SUMS): no network, sums checked
set -eu

say() { printf 'install-criu: %s\n' "$*"; }
cannot() {
  say "$*"
  say "checkpointing stays off on this host: outlast keeps waiting processes alive instead."
  exit 0
}
fail() { say "ERROR: $*" >&2; exit 1; }

# "4.2.1" from `criu --version`; empty when the binary does not run.
criu_version() { "$1" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n 1; }
version_ok() {  # $1: version string; true when >= 4.2
  major=${1%%.*}; rest=${1#*.}; minor=${rest%%.*}
  case "$major$minor" in ''|*[!0-9]*) return 1 ;; esac
  [ "$major" -gt 4 ] || { [ "$major" -eq 4 ] && [ "$minor" -ge 2 ]; }
}
# Runs `criu check`; prints a verdict; returns its status.
run_check() {  # $1: criu binary
  if out=$("$1" check 2>&1); then
    say "criu check: $(printf '%s' "$out" | tail -n 1)"
    return 0
  fi
  say "criu check FAILED:"
  printf '%s\n' "$out" | tail -n 15 | sed 's/^/    /'
  if [ "$(id -u)" != 0 ]; then say "(criu needs root with CAP_SYS_ADMIN; this is uid $(id -u))"; fi
  return 1
}

[ "$(uname -s)" = Linux ] || cannot "not Linux ($(uname -s)): CRIU exists only for Linux."

if [ "$(id -u)" = 0 ]; then DEFAULT_PREFIX=/opt/outlast-criu; else DEFAULT_PREFIX=${HOME:?}/.local/share/outlast/criu; fi
PREFIX=${1:-${OUTLAST_CRIU_PREFIX:-$DEFAULT_PREFIX}}
case $PREFIX in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac

# ---- 0. already installed? -------------------------------------------------
if [ -z "${OUTLAST_CRIU_FORCE:-}" ] && [ -x "$PREFIX/bin/criu" ]; then
  v=$(criu_version "$PREFIX/bin/criu")
  if version_ok "$v"; then
    say "criu $v already installed at $PREFIX/bin/criu"
    run_check "$PREFIX/bin/criu" || cannot "criu is installed but 'criu check' fails here (see above)."
    exit 0
  fi
  say "existing $PREFIX/bin/criu is unusable (version '${v:-does not run}'); reinstalling"
fi

# ---- 1. can this host install the Debian package? ---------------------------
for tool in apt-get dpkg dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || cannot "not a Debian-like system ($tool missing); install criu >= 4.2 yourself and set OUTLAST_CRIU to its path."
done
ARCH=$(dpkg --print-architecture)
case $ARCH in
  amd64) MA=x86_64-linux-gnu;  LDSO=ld-linux-x86-64.so.2 ;;
  arm64) MA=aarch64-linux-gnu; LDSO=ld-linux-aarch64.so.1 ;;
  *) cannot "architecture $ARCH is not supported by this installer (amd64, arm64)." ;;
esac
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SUITE=${OUTLAST_CRIU_SUITE:-forky}
debian_mirror() {  # the Debian mirror this machine's apt already uses, if any
  { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | sed 's/\[[^]]*\]//' | awk '{print $2}'
  } | grep '/debian/*$' | head -n 1
}
MIRROR=${OUTLAST_CRIU_MIRROR:-$(debian_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

# One installer at a time per prefix.
mkdir -p "$(dirname "$PREFIX")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$PREFIX.lock"
  flock 9
fi

# Build in a staging dir beside PREFIX, then swap it in: a failed or
# interrupted install never leaves a half-written PREFIX behind.
STAGE=$PREFIX.new.$$
W=
cleanup() { rm -rf "$STAGE" ${W:+"$W"}; }
trap cleanup EXIT
trap 'exit 1' INT TERM
mkdir -p "$STAGE/bin" "$STAGE/debs"

if [ -n "${OUTLAST_CRIU_DEBS:-}" ]; then
  say "installing from $OUTLAST_CRIU_DEBS (no download)"
  cp "$OUTLAST_CRIU_DEBS"/*.deb "$STAGE/debs/" || fail "no .deb files in $OUTLAST_CRIU_DEBS"
  if [ -f "$OUTLAST_CRIU_DEBS/SHA256SUMS" ]; then
    cp "$OUTLAST_CRIU_DEBS/SHA256SUMS" "$STAGE/debs/"
    (cd "$STAGE/debs" && sha256sum -c --quiet SHA256SUMS) || fail "checksum mismatch in $OUTLAST_CRIU_DEBS"
  fi
else
  [ -r "$KEYRING" ] || cannot "$KEYRING is missing (package debian-archive-keyring); it is needed to verify Debian's criu package."
  say "downloading criu from Debian $SUITE ($MIRROR)"
  # ---- 2. private apt state; the empty dpkg status makes apt resolve the
  #         full closure (libc6 included) rather than what this host lacks.
  W=$(mktemp -d "${TMPDIR:-/tmp}/outlast-criu-apt.XXXXXX")
  chmod 755 "$W"
  mkdir -p "$W/sources.list.d" "$W/preferences.d" "$W/lists/partial" "$W/cache/archives/partial"
  : > "$W/status"
  for s in $SUITE; do echo "deb [signed-by=$KEYRING] $MIRROR $s main"; done > "$W/sources.list"
  if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
    chown -R _apt "$W/lists/partial" "$W/cache/archives/partial"   # apt's download sandbox user
  fi
  set -- -q -o Debug::NoLocking=1 \
    -o Dir::Etc::SourceList="$W/sources.list" -o Dir::Etc::SourceParts="$W/sources.list.d" \
    -o Dir::Etc::Preferences="$W/preferences" -o Dir::Etc::PreferencesParts="$W/preferences.d" \
    -o Dir::State::Lists="$W/lists" -o Dir::State::status="$W/status" \
    -o Dir::State::extended_states="$W/extended_states" -o Dir::Cache="$W/cache" \
    -o APT::Install-Recommends=0 -o APT::Install-Suggests=0 \
    -o APT::Architecture="$ARCH" -o APT::Architectures="$ARCH"
  apt-get "$@" update >"$W/apt.log" 2>&1 || { cat "$W/apt.log" >&2; fail "apt-get update failed for $MIRROR $SUITE"; }
  apt-get "$@" -y --download-only install criu >>"$W/apt.log" 2>&1 \
    || { tail -n 20 "$W/apt.log" >&2; fail "could not download criu from Debian $SUITE"; }
  cp "$W"/cache/archives/*.deb "$STAGE/debs/"
  (cd "$STAGE/debs" && sha256sum ./*.deb > SHA256SUMS)
fi

# ---- 3. unpack (no maintainer scripts run, nothing registered with dpkg) ----
R=$STAGE/root
mkdir -p "$R"
for d in "$STAGE"/debs/*.deb; do dpkg-deb -x "$d" "$R"; done
[ -x "$R/usr/lib/$MA/$LDSO" ] || fail "the loader $LDSO is not in the downloaded closure"
[ -x "$R/usr/sbin/criu" ] || fail "criu binary not found in the downloaded package"
# Every library criu needs must resolve inside the prefix.
outside=$("$R/usr/lib/$MA/$LDSO" --inhibit-cache --library-path "$R/usr/lib/$MA:$R/lib/$MA" \
            --list "$R/usr/sbin/criu" | grep -v -e "$R" -e linux-vdso || true)
[ -z "$outside" ] || fail "libraries resolve outside the prefix: $outside"

# ---- 4. the wrapper ----------------------------------------------------------
# --library-path, not LD_LIBRARY_PATH: the programs criu starts (sh, ip, tar,
# action scripts) must keep the host libc. --inhibit-cache: ignore the host's
# /etc/ld.so.cache. The prefix is found from the wrapper's own path, so the
# tree can be moved or copied to another node as a whole.
cat > "$STAGE/bin/criu" <<EOF
#!/bin/sh
R=\$(dirname "\$(readlink -f "\$0")")/../root
L=\$R/usr/lib/$MA
exec "\$L/$LDSO" --inhibit-cache --library-path "\$L:\$R/lib/$MA" --argv0 criu "\$R/usr/sbin/criu" "\$@"
EOF
chmod 755 "$STAGE/bin/criu"
v=$(criu_version "$STAGE/bin/criu")
version_ok "$v" || fail "the downloaded criu reports version '${v:-none}', need >= 4.2 (try OUTLAST_CRIU_SUITE='forky sid')"

# ---- 5. swap into place ------------------------------------------------------
if [ -e "$PREFIX" ]; then
  mv "$PREFIX" "$PREFIX.old.$$"
  mv "$STAGE" "$PREFIX"
  rm -rf "$PREFIX.old.$$"
else
  mv "$STAGE" "$PREFIX"
fi
say "installed criu $v at $PREFIX/bin/criu ($(du -sh "$PREFIX" | cut -f1))"
case $PREFIX in
  /opt/outlast-criu|"${HOME:-/nonexistent}/.local/share/outlast/criu") ;;
  *) say "non-default prefix: set OUTLAST_CRIU_PREFIX=$PREFIX for outlast to find it" ;;
esac
run_check "$PREFIX/bin/criu" || cannot "criu is installed but 'criu check' fails here (see above)."
