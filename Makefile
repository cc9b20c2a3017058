.PHONY: run test

# The two commands of the README; the scripts in bin/ do the work, so make is optional.
run:
	bin/run

test:
	bin/test
