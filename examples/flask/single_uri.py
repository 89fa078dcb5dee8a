"""The note's Flask app with a single SQLALCHEMY_DATABASE_URI and no bind
keys: the daemon's sqlmux_single.ini maps each table to its bind (test1 and
tree in default, test2 in second_db, test3 and nuts in the in-memory
memory_db). One engine, one session: a commit that wrote several binds is
one transaction across them, and the note's last section works: Nuts has a
foreign key to Tree in another database, a relationship, and
db.session.query(Nuts).join(Tree).

    sqlmuxd sqlmux_single.ini &
    FLASK_APP=single_uri.py flask shell      # then db.create_all()

SQLMUX_URL (default sqlmux://127.0.0.1:7654) says where the daemon is.
"""
import os

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import sqlmux  # noqa: F401  (registers sqlmux:// with SQLAlchemy)

SQLMUX = os.environ.get("SQLMUX_URL", "sqlmux://127.0.0.1:7654").rstrip("/")


class Config(object):
    '''Configuration object for Flask app instance'''
    PROJECT_NAME = 'Project Name'
    SECRET_KEY = os.environ.get('SECRET_KEY') or 'super_secret_password'
    # One database for the app: the daemon routes each table to its bind
    SQLALCHEMY_DATABASE_URI = SQLMUX


db = SQLAlchemy()


class Test1(db.Model):
    '''Model for the testing first database (default bind)'''
    id = db.Column(db.Integer, primary_key=True)
    color = db.Column(db.String(64), default='red')


class Test2(db.Model):
    '''Model for the testing second database (second_db)'''
    id = db.Column(db.Integer, primary_key=True)
    color = db.Column(db.String(64), default='red')


class Test3(db.Model):
    '''Model for the testing in memory database (memory_db)'''
    id = db.Column(db.Integer, primary_key=True)
    color = db.Column(db.String(64), default='blue')


class Tree(db.Model):
    '''Model for a table to store Trees (default bind)'''
    __tablename__ = 'tree'
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(16), index=True, unique=True)
    nuts = db.relationship('Nuts', back_populates='tree')


class Nuts(db.Model):
    '''Model for a table to store nuts (memory_db)'''
    __tablename__ = 'nuts'
    id = db.Column(db.Integer, primary_key=True)
    type = db.Column(db.String(16), index=True)
    # many to one relationship, to a table in another database:
    tree_name = db.Column(db.String(32), db.ForeignKey('tree.name'))
    tree = db.relationship('Tree', back_populates='nuts')


def create_app(config=Config):
    app = Flask(__name__)
    app.config.from_object(config)
    db.init_app(app)
    return app


app = create_app()
