"""ipytinyml.toolchain.avr_build: Debian's arduino-builder and Arduino AVR core, for real.

Every build here runs the real arduino-builder, arduino-ctags and avr-gcc
offline. Missing packages are simulated the only honest way: by pointing the
tool lookup at an empty folder (``path=``) or the core lookup at an empty
hardware folder; nothing in our own code is mocked.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ipytinyml.errors import ToolchainError
from ipytinyml.toolchain import avr_build
from ipytinyml.toolchain.avr_build import build_sketch, missing_packages

SKETCHES = Path(__file__).parent / "sketches"

pytestmark = pytest.mark.skipif(bool(missing_packages()),
                                reason=f"Debian packages missing: {missing_packages()}")


@pytest.fixture(scope="module")
def core_cache(tmp_path_factory):
    """A core cache of our own, so the tests neither read nor fill the user's."""
    return tmp_path_factory.mktemp("core_cache")


@pytest.fixture(scope="module")
def echo_build(tmp_path_factory, core_cache):
    build_dir = tmp_path_factory.mktemp("echo_build")
    return build_sketch(SKETCHES / "echo", build_dir, core_cache=core_cache), build_dir


def _sketch(folder: Path, name: str, text: str, **files: str) -> Path:
    sketch = folder / name
    sketch.mkdir(parents=True)
    (sketch / f"{name}.ino").write_text(text)
    for filename, content in files.items():
        (sketch / filename.replace("_dot_", ".")).write_text(content)
    return sketch


def test_build_gives_elf_hex_and_the_sizes_arduino_reports(echo_build):
    result, build_dir = echo_build
    assert result.elf == build_dir / "echo.ino.elf" and result.elf.is_file()
    assert result.hex == build_dir / "echo.ino.hex" and result.hex.read_text().startswith(":")
    assert result.elf.read_bytes()[:4] == b"\x7fELF"
    # Our sizes (avr-size) agree with arduino-builder's own summary lines.
    flash = int(re.search(r"Sketch uses (\d+) bytes", result.log).group(1))
    ram = int(re.search(r"Global variables use (\d+) bytes", result.log).group(1))
    assert (result.flash_bytes, result.ram_bytes) == (flash, ram)
    assert 1000 < result.flash_bytes < 4000 and 150 < result.ram_bytes < 600
    sizes = avr_build.section_sizes(result.elf)
    assert result.flash_bytes == sizes[".text"] + sizes[".data"]


def test_rebuild_reuses_the_core_and_picks_up_changes(tmp_path, core_cache):
    sketch = tmp_path / "echo"
    shutil.copytree(SKETCHES / "echo", sketch)
    first = build_sketch(sketch, tmp_path / "build", core_cache=core_cache)
    archives = sorted((core_cache / "core").glob("core_*.a"))
    assert len(archives) == 1, archives
    stamp = archives[0].stat().st_mtime_ns
    old_elf = first.elf.read_bytes()

    source = sketch / "echo.ino"
    source.write_text(source.read_text().replace('"#echo ready"', '"#echo ready again"'))
    second = build_sketch(sketch, tmp_path / "build", core_cache=core_cache)
    assert archives[0].stat().st_mtime_ns == stamp  # the core was not compiled again
    assert second.elf.read_bytes() != old_elf
    assert b"#echo ready again" in second.elf.read_bytes()
    assert second.flash_bytes == first.flash_bytes + len(" again")


def test_compile_error_is_one_line_with_file_and_line(tmp_path, core_cache):
    sketch = _sketch(tmp_path, "broken", "void setup() {\n  Serial.begin(115200);\n"
                     "  undeclared_thing = 3;\n}\nvoid loop() {}\n")
    with pytest.raises(ToolchainError) as info:
        build_sketch(sketch, tmp_path / "build", core_cache=core_cache)
    message = str(info.value)
    assert "\n" not in message
    assert message == ("compiling sketch broken failed: broken.ino:3: "
                       "'undeclared_thing' was not declared in this scope")
    assert "undeclared_thing = 3;" in info.value.log  # the full log is kept
    assert info.value.diagnostics == [
        "broken.ino:3:3: error: 'undeclared_thing' was not declared in this scope"]


def test_error_in_a_cpp_file_names_the_file_in_the_sketch_folder(tmp_path, core_cache):
    sketch = _sketch(tmp_path, "twofiles", '#include "helper.h"\n'
                     "void setup() { Serial.begin(115200); helper(); }\nvoid loop() {}\n",
                     helper_dot_h="int helper(void);\n",
                     helper_dot_cpp='#include "helper.h"\n\nint helper(void) { return nope; }\n')
    with pytest.raises(ToolchainError, match=r"^compiling sketch twofiles failed: helper\.cpp:3: "
                                             r"'nope' was not declared in this scope$"):
        build_sketch(sketch, tmp_path / "build", core_cache=core_cache)


def test_link_error_and_too_big_are_one_line(tmp_path, core_cache):
    undefined = _sketch(tmp_path, "undefined", "int missing(void);\nvoid setup() "
                        "{ Serial.begin(115200); Serial.println(missing()); }\nvoid loop() {}\n")
    with pytest.raises(ToolchainError, match=r"^linking sketch undefined failed: undefined "
                                             r"reference to `missing\(\)'"):
        build_sketch(undefined, tmp_path / "b1", core_cache=core_cache)
    big = _sketch(tmp_path, "big", "volatile char ram[3000];\nvoid setup() { ram[analogRead(0)] "
                  "= 1; Serial.begin(115200); Serial.println(ram[analogRead(1)]); }\n"
                  "void loop() {}\n")
    with pytest.raises(ToolchainError, match=r"^sketch big does not fit in the RAM of arduino:avr:uno"):
        build_sketch(big, tmp_path / "b2", core_cache=core_cache)


def test_extra_flags_reach_the_compiler(tmp_path, core_cache):
    sketch = _sketch(tmp_path, "flagged", "#ifndef TINYML_MARK\n#error TINYML_MARK not set\n#endif\n"
                     "void setup() { Serial.begin(115200); Serial.println(TINYML_MARK); }\n"
                     "void loop() {}\n")
    with pytest.raises(ToolchainError, match="TINYML_MARK not set"):
        build_sketch(sketch, tmp_path / "b1", core_cache=core_cache)
    built = build_sketch(sketch, tmp_path / "b2", extra_flags=("-DTINYML_MARK=4242",),
                         core_cache=core_cache)
    assert built.elf.is_file()
    with pytest.raises(ToolchainError, match="one flag per item"):
        build_sketch(sketch, tmp_path / "b3", extra_flags=("-DA=1 -DB=2",), core_cache=core_cache)


def test_not_a_sketch_folder(tmp_path):
    with pytest.raises(ToolchainError, match="does not exist"):
        build_sketch(tmp_path / "nowhere", tmp_path / "build")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "other.ino").write_text("void setup(){}\nvoid loop(){}\n")
    with pytest.raises(ToolchainError, match=r"needs folder\.ino"):
        build_sketch(tmp_path / "folder", tmp_path / "build")


def test_unknown_board_is_reported(tmp_path, core_cache):
    with pytest.raises(ToolchainError, match="Board nope .* is unknown"):
        build_sketch(SKETCHES / "echo", tmp_path / "build", fqbn="arduino:avr:nope",
                     core_cache=core_cache)


def test_missing_packages_are_named_with_the_install_command(tmp_path):
    assert missing_packages() == []
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    assert missing_packages(path=str(empty)) == ["arduino-builder", "arduino-ctags", "gcc-avr",
                                                 "binutils-avr"]
    assert missing_packages(hardware_dir=tmp_path, avr_libc_header=tmp_path / "io.h") == [
        "arduino-core-avr", "avr-libc"]
    with pytest.raises(ToolchainError) as info:
        build_sketch(SKETCHES / "echo", tmp_path / "build", path=str(empty))
    message = str(info.value)
    assert "\n" not in message
    assert "arduino-builder, arduino-ctags, gcc-avr, binutils-avr" in message
    assert message.endswith("apt-get install -y arduino-builder arduino-ctags gcc-avr binutils-avr")
    assert not (tmp_path / "build").exists()  # nothing was started
