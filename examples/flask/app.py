"""The note's Flask app (../../../shared note "Working with Multiple Databases
in Flask") on sqlmux: Test1 in the default bind, Test2 in second_db, Test3 in
the in-memory memory_db, every bind reached through one sqlmux daemon.

    sqlmuxd sqlmux.ini &                       # the daemon, this folder's config
    FLASK_APP=app.py flask db init --multidb   # Flask-Migrate, as the note says
    FLASK_APP=app.py flask db migrate && FLASK_APP=app.py flask db upgrade

SQLMUX_URL (default sqlmux://127.0.0.1:7654) says where the daemon is.
"""
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

import sqlmux  # noqa: F401  (registers sqlmux:// with SQLAlchemy)

SQLMUX = os.environ.get("SQLMUX_URL", "sqlmux://127.0.0.1:7654").rstrip("/")


class Config(object):
    '''Configuration object for Flask app instance'''
    PROJECT_NAME = 'Project Name'
    SECRET_KEY = os.environ.get('SECRET_KEY') or 'super_secret_password'
    # The default database: the daemon's default bind
    SQLALCHEMY_DATABASE_URI = SQLMUX + '/default'
    # Additional databases: the daemon's other binds, by name
    SQLALCHEMY_BINDS = {
        'second_db': SQLMUX + '/second_db',
        'memory_db': SQLMUX + '/memory_db',
    }


db = SQLAlchemy()
migrate = Migrate()


class Test1(db.Model):
    '''Model for the testing first database'''
    # This table will be built in the default database
    id = db.Column(db.Integer, primary_key=True)
    color = db.Column(db.String(64), default='red')


class Test2(db.Model):
    '''Model for the testing second database'''
    __bind_key__ = 'second_db'
    id = db.Column(db.Integer, primary_key=True)
    color = db.Column(db.String(64), default='red')


class Test3(db.Model):
    '''Model for the testing in memory database'''
    __bind_key__ = 'memory_db'
    id = db.Column(db.Integer, primary_key=True)
    color = db.Column(db.String(64), default='blue')


def create_app(config=Config):
    app = Flask(__name__)
    app.config.from_object(config)
    db.init_app(app)
    migrate.init_app(app, db)
    return app


app = create_app()
