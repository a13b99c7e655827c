#!/usr/bin/env bash
# Installs the Debian packages that tasktree's build, tests, tools and demo need, if any is missing.
# Extra package names may be given as arguments. Uses sudo when not run as root.
set -euo pipefail

# libclang-rt-dev: Clang's runtimes, among them libFuzzer (the "fuzz" preset).
# libtbb-dev: oneTBB, the comparison in benchmarks/.
# libcli11-dev, nlohmann-json3-dev: tasktree-run's argument parsing and --json report.
# libopenmpi-dev, openmpi-bin: the MPI scale-out (tasktree::mpi) and its tests under mpiexec.
# doxygen: the API reference (target docs, in the default preset), which fails on any warning.
# pkg-config, dpkg-dev, file, lintian: the package tests build against the installed .pc file, make
# the Debian package with cpack (dpkg-shlibdeps, file) and check it with lintian.
packages=(cmake ninja-build g++ clang libclang-rt-dev libfmt-dev catch2 libtbb-dev libcli11-dev nlohmann-json3-dev
          libopenmpi-dev openmpi-bin doxygen pkg-config dpkg-dev file lintian "$@")
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "scripts/deps.sh: please install: ${missing[*]}" >&2
  exit 2
fi
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "scripts/deps.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
