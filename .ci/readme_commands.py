"""Prints the commands of README.md's set-up block, one a line, without their trailing comments.

.ci/run runs exactly these, so the README's two set-up commands cannot drift from what CI checks."""
import pathlib
import re
import sys

text = pathlib.Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
m = re.search(r"^## Set-up[^\n]*\n.*?^```bash\n(.*?)^```", text, re.S | re.M)
if not m:
    sys.exit("readme_commands: README.md has no '## Set-up' section with a ```bash block")
for line in m.group(1).splitlines():
    cmd = re.sub(r"\s+#[^\"']*$", "", line).strip()
    if cmd:
        print(cmd)
