"""Running the stack in CI: isolation, the GitHub Actions workflow, the failure bundle."""

BUNDLE_DIR = "edaenv-bundle"  # where the workflow's failure step writes the bundle
