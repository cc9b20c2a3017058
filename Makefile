.PHONY: run test messages

# The two commands of the README; the scripts in bin/ do the work, so make is optional.
run:
	bin/run

test:
	bin/test

# Update the translation catalogs from the sources and compile them (then translate what is new).
messages:
	DEBUG=1 .venv/bin/python manage.py makemessages -l es_AR -l en --ignore=.venv --ignore=var --ignore=tests --ignore=benchmarks
	msgfmt -o locale/es_AR/LC_MESSAGES/django.mo locale/es_AR/LC_MESSAGES/django.po
	msgfmt -o locale/en/LC_MESSAGES/django.mo locale/en/LC_MESSAGES/django.po
	msgfmt -o locale_django/es_AR/LC_MESSAGES/django.mo locale_django/es_AR/LC_MESSAGES/django.po
	msgfmt -o locale_django/es_AR/LC_MESSAGES/djangojs.mo locale_django/es_AR/LC_MESSAGES/djangojs.po
