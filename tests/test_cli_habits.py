"""Habits diffusers and AUTOMATIC1111 users bring (issue 30): --version, sampler names, A1111 `parameters`
text, output formats, prompt files, --device, --help.  Paints with the real bundled models."""

from importlib.metadata import version

import unnoise


def test_version_is_the_package_version(cli):
    code, out, err = cli(["--version"])
    assert code == 0, err
    assert out.strip() == f"unnoise {unnoise.__version__}" == f"unnoise {version('unnoise')}"
