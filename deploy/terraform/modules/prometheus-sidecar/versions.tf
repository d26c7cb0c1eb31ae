# A pure module: it renders a container definition and a collector configuration and creates
# no resources, so it needs no provider. That also makes it the one module `tofu validate`
# can check fully offline (see ../../check.sh).
terraform {
  required_version = ">= 1.6.0"
}
